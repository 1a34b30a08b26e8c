"""The GPU probe item of the pre-launch checklist: a cuda job nobody can judge is refused.

The probe is the real ``GpuProbe`` over the fake NVML (``tests/fakes/nvml.py``); the
``harness check`` test uses the real pynvml of this machine, and only runs where it has
no NVIDIA driver (the case the item exists for).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pynvml
import pytest

from harness.cli.main import main
from harness.core.spec import RunSpec
from harness.runtime.preflight import CheckItem, preflight_checks
from harness.runtime.probes import GpuProbe
from tests.fakes.nvml import FakeNvml

DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED


def gpu_item(spec: RunSpec, probe: GpuProbe | None, tmp_path: Path) -> CheckItem | None:
    items = preflight_checks(
        spec, run_dir=tmp_path / "run", run_id="check-1", store=None, clean=False, gpu=probe
    )
    found = [i for i in items if i.name == "GPU probe"]
    assert len(found) <= 1
    return found[0] if found else None


def spec(device: str, **watch: object) -> RunSpec:
    return RunSpec.model_validate(
        {"name": "j", "command": [sys.executable], "device": device, "watch": watch}
    )


def test_a_cuda_spec_fails_the_item_when_nvml_cannot_start(tmp_path: Path) -> None:
    probe = GpuProbe(FakeNvml(init_error=DRIVER_NOT_LOADED))
    item = gpu_item(spec("cuda"), probe, tmp_path)
    assert item is not None and not item.passed
    assert item.rule == "gpu_probe" and item.mistake_ids == ("M-015",)
    assert item.evidence.startswith("cuda needs readable GPU utilisation and NVML could not start")
    assert "Driver Not Loaded" in item.evidence


def test_an_optional_gpu_probe_passes_and_says_the_job_runs_unjudged(tmp_path: Path) -> None:
    probe = GpuProbe(FakeNvml(init_error=DRIVER_NOT_LOADED))
    item = gpu_item(spec("cuda:0", gpu_probe="optional"), probe, tmp_path)
    assert item is not None and item.passed
    assert 'cuda:0 runs unjudged (watch.gpu_probe = "optional")' in item.evidence


def test_a_readable_gpu_passes_and_a_missing_index_fails(tmp_path: Path) -> None:
    probe = GpuProbe(FakeNvml(count=2))
    ok = gpu_item(spec("cuda:1"), probe, tmp_path)
    assert ok is not None and ok.passed and ok.evidence == "NVML reads 2 GPU(s)"
    missing = gpu_item(spec("cuda:2"), probe, tmp_path)
    assert missing is not None and not missing.passed
    assert missing.evidence == "cuda:2 names GPU 2 and NVML reads 2 GPU(s)"
    assert probe.available  # the supervisor's probe is not closed by the check


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_and_auto_jobs_have_no_gpu_item(device: str, tmp_path: Path) -> None:
    assert (
        gpu_item(spec(device), GpuProbe(FakeNvml(init_error=DRIVER_NOT_LOADED)), tmp_path) is None
    )


def real_nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_harness_check_fails_a_cuda_spec_on_a_machine_without_a_driver(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if real_nvml_works():
        pytest.skip("this machine has an NVIDIA driver")
    path = tmp_path / "gpu.toml"
    path.write_text(f'name = "gpu"\ncommand = ["{sys.executable}"]\ndevice = "cuda"\n')
    assert main(["check", str(path), "--json"]) == 1
    items = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    item = items["GPU probe"]
    assert item["passed"] is False
    assert item["rule"] == "gpu_probe" and item["mistake_ids"] == ["M-015"]
    assert item["evidence"].startswith("cuda needs readable GPU utilisation and ")
    # the same spec with the probe optional passes that item
    path.write_text(path.read_text() + '[watch]\ngpu_probe = "optional"\n')
    main(["check", str(path), "--json"])
    items = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert items["GPU probe"]["passed"] is True
