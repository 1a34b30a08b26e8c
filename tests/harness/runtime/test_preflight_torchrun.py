"""The torchrun item of the pre-launch checklist: the command is one torchrun can run,
the interpreter has ``torch.distributed.run`` (asked without importing torch), and a GPU
job has a GPU for each rank (the real ``GpuProbe`` over the fake NVML)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from harness.core.spec import RunSpec
from harness.runtime.preflight import CheckItem, preflight_checks
from harness.runtime.probes import GpuProbe
from tests.fakes.nvml import FakeNvml


def torchrun_item(spec: RunSpec, tmp_path: Path, gpu: GpuProbe | None = None) -> CheckItem:
    items = preflight_checks(
        spec, run_dir=tmp_path / "run", run_id="check-1", store=None, clean=False, gpu=gpu
    )
    (item,) = [i for i in items if i.name == "torchrun"]
    return item


def spec(command: list[str], ranks: int = 2, device: str = "cpu") -> RunSpec:
    return RunSpec.model_validate(
        {
            "name": "ddp",
            "command": command,
            "device": device,
            "launcher": "torchrun",
            "torchrun": {"nproc_per_node": ranks},
            "watch": {"gpu_probe": "optional"},
        }
    )


def test_a_runnable_command_passes_naming_the_ranks_and_torchrun(tmp_path: Path) -> None:
    item = torchrun_item(spec(["{python}", "-m", "model.train"]), tmp_path)
    assert item.passed, item.evidence
    assert item.evidence.startswith(f"2 rank(s) under {sys.executable} (")
    assert item.evidence.endswith(os.path.join("torch", "distributed", "run.py)"))


def test_a_command_torchrun_cannot_run_fails(tmp_path: Path) -> None:
    item = torchrun_item(spec(["{python}", "-c", "print(1)"]), tmp_path)
    assert not item.passed
    assert "torchrun runs a script or a module, not 'python -c'" in item.evidence


def test_an_interpreter_without_torch_fails(tmp_path: Path) -> None:
    # this interpreter with no site-packages (-S, empty environment): no torch to find
    bare = tmp_path / "bin" / "python3"
    bare.parent.mkdir()
    bare.write_text(f'#!/bin/sh\nexec /usr/bin/env -i {sys.executable} -S "$@"\n')
    bare.chmod(bare.stat().st_mode | stat.S_IXUSR)
    item = torchrun_item(spec([str(bare), "-m", "model.train"]), tmp_path)
    assert not item.passed
    assert item.evidence == f"{bare} has no torch.distributed.run (install torch for it)"


def test_a_gpu_job_needs_a_gpu_per_rank(tmp_path: Path) -> None:
    command = ["{python}", "-m", "model.train"]
    one_gpu = GpuProbe(FakeNvml(count=1))
    item = torchrun_item(spec(command, ranks=2, device="cuda"), tmp_path, one_gpu)
    assert not item.passed
    assert item.evidence == (
        "nproc_per_node = 2 on a machine with 1 GPU(s) (NVML): each rank needs its own GPU"
    )
    two_gpus = GpuProbe(FakeNvml(count=2))
    assert torchrun_item(spec(command, ranks=2, device="cuda"), tmp_path, two_gpus).passed
