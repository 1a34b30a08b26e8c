"""bench/gpu_check.py without a GPU: the CPU dry run as a subprocess, the docs writer, the
wheel discovery, the dependency lists against pyproject.toml, and the verdicts of the GPU
steps on fabricated runs and incidents (so the one real-device run is not the first test)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement

from harness.core.spec import spec_from_toml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
REAL_DOCS = ROOT / "docs" / "BENCHMARKS.md"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gc = _load()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the dry run --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_dry_run_without_cuda_stops_before_the_gpu_steps_and_exits_0(tmp_path: Path) -> None:
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text(REAL_DOCS.read_text(encoding="utf-8"), encoding="utf-8")
    before_real, before_copy = _digest(REAL_DOCS), _digest(docs)
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "OUT" and not k.startswith("HARNESS_")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # no CUDA device for torch, on any machine
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--work", str(work)]
    cmd += ["--wheels", str(tmp_path / "no-wheels"), "--docs", str(docs)]
    got = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=110)
    out = got.stdout
    assert got.returncode == 0, out + got.stderr
    assert "no CUDA device: stopping before the GPU steps" in out
    assert "PASS step 0 setup" in out
    assert "every carried module is importable here: nothing to install" in out
    assert "project from the tree through PYTHONPATH" in out
    assert "spec echo device=cuda" in out and ": ok" in out
    assert out.count("not run: no CUDA device") >= 2 * 5  # a line per step and a table row
    assert "| step | result | figures | seconds |" in out
    # the writer ran on a copy in the work folder; the file named by --docs and the real
    # docs/BENCHMARKS.md are untouched
    assert _digest(docs) == before_copy and _digest(REAL_DOCS) == before_real
    copy = (work / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert copy.count(gc.BEGIN) == 1 and copy.count(gc.END) == 1 and gc.HEADING in copy
    assert "| 3 starved GPU job | **SKIP** | not run: no CUDA device | 0 |" in copy
    assert "Dry run, no GPU steps" in copy and "No GPU step ran" in copy
    outside = copy.split(gc.BEGIN)[0] + copy.split(gc.END)[1]
    original = docs.read_text(encoding="utf-8")
    if gc.BEGIN in original:
        assert outside == original.split(gc.BEGIN)[0] + original.split(gc.END)[1]
    else:
        assert outside.startswith(original.rstrip("\n"))
    doc = json.loads((work / "gpu_check.json").read_text())
    assert [s["step"] for s in doc["steps"]] == [0, 1, 2, 3, 4, 5]
    assert [s["result"] for s in doc["steps"]] == ["PASS"] + ["SKIP"] * 5


# -- the docs writer ------------------------------------------------------------------------


def _results(**figures: str) -> list[Any]:
    return [
        gc.StepResult(n, gc.STEP_NAMES[n], "PASS", figures.get(f"s{n}", f"f{n}"), n)
        for n in range(6)
    ]


def test_the_table_replaces_the_previous_one_and_leaves_the_rest(tmp_path: Path) -> None:
    docs = tmp_path / "B.md"
    docs.write_text("# Benchmarks\n\n## Model\n\ntext\n")
    meta = {"when": "now", "machine": "H200", "software": "x", "total_s": 1, "budget_s": 2}
    gc.write_section(docs, gc.render_block(_results(s2="old | figure"), meta))
    first = docs.read_text()
    assert first.startswith("# Benchmarks\n\n## Model\n\ntext\n\n" + gc.HEADING + "\n\n")
    assert "old \\| figure" in first  # a | in a figure does not break the table
    gc.write_section(docs, gc.render_block(_results(s2="new figure"), meta))
    second = docs.read_text()
    assert "old" not in second and "new figure" in second
    assert second.count(gc.HEADING) == 1 and second.count(gc.BEGIN) == 1
    gc.write_section(docs, gc.render_block(_results(s2="new figure"), meta))
    assert docs.read_text() == second  # idempotent


def test_the_table_goes_under_an_existing_heading_before_the_next_section(tmp_path: Path) -> None:
    docs = tmp_path / "B.md"
    docs.write_text(f"# B\n\n{gc.HEADING}\n\nHow to run it.\n\n## Later\n\nkept\n")
    gc.write_section(docs, gc.render_block(_results(), {}))
    text = docs.read_text()
    head, later = text.split("## Later")
    assert head.index("How to run it.") < head.index(gc.BEGIN) < head.index(gc.END)
    assert later == "\n\nkept\n"


def test_a_failed_expectation_is_named_under_the_table() -> None:
    results = _results()
    results[3] = gc.StepResult(3, gc.STEP_NAMES[3], "FAIL", "no SM evidence", 30.0)
    block = gc.render_block(results, {})
    assert "| 3 starved GPU job | **FAIL** | no SM evidence | 30 |" in block
    assert "Expectations **not met**: step 3 starved GPU job" in block
    assert "Every expectation met (5 GPU steps run, 0 skipped)." in gc.render_block(_results(), {})
    skipped = [
        r if r.step == 0 else gc.StepResult(r.step, r.name, "SKIP", "", 0) for r in _results()
    ]
    assert "No GPU step ran: nothing was measured." in gc.render_block(skipped, {})


def test_apply_merges_a_rerun_step_by_step(tmp_path: Path) -> None:
    first = gc.results_to_json(_results(s3="first try"), {"when": "t1"})
    rerun = gc.results_to_json(
        [gc.StepResult(3, "starved GPU job", "PASS", "rerun", 9.0)], {"when": "t2"}
    )
    files = []
    for n, doc in enumerate((first, rerun)):
        files.append(tmp_path / f"{n}.json")
        files[-1].write_text(json.dumps(doc))
    docs = tmp_path / "B.md"
    assert gc.main(["--apply", *map(str, files), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "rerun" in text and "first try" not in text and "t2" in text
    assert "| 2 echo on CUDA | **PASS** | f2 |" in text


# -- wheels and the dependency lists --------------------------------------------------------


def _wheels(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def _good() -> list[str]:
    names = {
        "sqlalchemy": "sqlalchemy-2.1.9-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "pydantic-core": "pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_x86_64.whl",
    }
    out = []
    for dist, _ in gc.CARRIED:
        key = gc.normalise(dist)
        out.append(names.get(key, f"{key.replace('-', '_')}-1.0-py3-none-any.whl"))
    return out


def test_wheel_discovery_wants_one_fitting_wheel_of_each_carried_package(tmp_path: Path) -> None:
    report = gc.discover_wheels(
        _wheels(tmp_path / "ok", [*_good(), "six-1.0-py3-none-any.whl"]), (3, 12)
    )
    assert report.complete and len(report.found) == len(gc.CARRIED)
    assert report.extra == ["six-1.0-py3-none-any.whl"]
    # the same wheels do not fit another Python
    other = gc.discover_wheels(tmp_path / "ok", (3, 11))
    assert not other.complete and len(other.unfit) == 2
    names = [n for n in _good() if not n.startswith("tzlocal")]
    names += ["discord_py-0.9-py3-none-any.whl"]
    bad = gc.discover_wheels(_wheels(tmp_path / "bad", names), (3, 12))
    assert bad.missing == ["tzlocal"] and list(bad.duplicates) == ["discord.py"]
    assert not bad.complete and "missing: tzlocal" in bad.summary()
    assert "no folder" in gc.discover_wheels(tmp_path / "absent", (3, 12)).summary()
    windows = gc.parse_wheel(Path("pydantic_core-2.50.5-cp312-cp312-win_amd64.whl"))
    assert windows is not None and not windows.fits((3, 12))


def test_every_dependency_is_carried_or_on_the_device() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = [*project["dependencies"], *project["optional-dependencies"]["train"]]
    known = {gc.normalise(d) for d, _ in gc.CARRIED} | {gc.normalise(d) for d, _, _ in gc.PRESENT}
    known |= {gc.normalise(d) for d, _ in gc.NOT_NEEDED}
    assert {gc.normalise(Requirement(r).name) for r in needed} <= known
    # ... and what each carried package needs in turn (on Linux, Python 3.12, no extras)
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux"}
    env |= {"platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
    for dist, _ in gc.CARRIED:
        for raw in importlib.metadata.requires(dist) or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate(env):
                assert gc.normalise(req.name) in known, f"{dist} needs {req.name}"


def test_the_pins_are_this_venv_s_versions() -> None:
    pins = gc.pins()
    assert len(pins) == len(gc.CARRIED)
    assert f"pydantic=={importlib.metadata.version('pydantic')}" in pins


# -- the GPU steps' specs and verdicts ------------------------------------------------------


def test_the_job_specs_are_valid_and_the_auto_job_names_no_device() -> None:
    starved = spec_from_toml(gc.starved_spec(40), source="starved")
    auto = spec_from_toml(gc.auto_spec(30), source="auto")
    assert starved.device == "cuda" and auto.device == "auto"
    assert starved.watch.util_grace_s + starved.watch.util_window_s < gc.BUDGET_S[3] - 15
    assert "--announce-device" not in auto.command and "busy" in auto.command
    assert auto.gates == {"done": ">= 1"}


def _incident(rule: str, summary: str, severity: str = "abort", **evidence: Any) -> dict[str, Any]:
    return {"rule": rule, "severity": severity, "summary": summary, "evidence": evidence}


def test_the_starved_job_passes_only_when_aborted_for_the_gpu_with_sm_activity() -> None:
    aborted = {"status": "aborted", "summary": "aborted"}
    sm = _incident(
        "utilisation", "GPU 0 at 1 % SM activity over 10 s, threshold 80 %", source="sm_activity"
    )
    assert gc.judge_starved(aborted, [sm])[0]
    util_only = _incident("utilisation", "GPU 3 % over 10 s, threshold 80 %", device="cuda")
    ok, why = gc.judge_starved(aborted, [util_only])
    assert not ok and "without SM-activity evidence" in why
    cpu = _incident("utilisation", "CPU 6 % over 10 s, threshold 80 %", device="cpu")
    assert "not as a GPU job" in gc.judge_starved(aborted, [cpu])[1]
    assert (
        "not by the utilisation rule"
        in gc.judge_starved(aborted, [_incident("stall", "no metrics")])[1]
    )
    assert "expected aborted" in gc.judge_starved({"status": "succeeded"}, [])[1]
    assert "no run could be read" in gc.judge_starved(None, [])[1]


def test_the_auto_job_fails_when_judged_by_its_cpu() -> None:
    done = {"status": "succeeded", "summary": "succeeded"}
    assert gc.judge_auto(done, []) == (True, "succeeded, not judged by its CPU")
    warned = _incident("utilisation", "CPU at 6 % for 5 s; aborting in 5 s", severity="warn")
    assert "judged by its CPU" in gc.judge_auto(done, [warned])[1]
    cpu_by_evidence = _incident("utilisation", "at 6 % over 10 s", label="CPU", device="cpu")
    assert "judged by its CPU (abort)" in gc.judge_auto(done, [cpu_by_evidence])[1]
    aborted = _incident("utilisation", "GPU 0 at 2 % SM activity over 10 s (CPU 6 % beside it)")
    assert "aborted for utilisation" in gc.judge_auto({"status": "aborted"}, [aborted])[1]
    assert "expected succeeded" in gc.judge_auto({"status": "failed", "summary": "gate"}, [])[1]


def test_figures_come_from_the_train_window_and_prefer_sm_activity() -> None:
    metrics = [
        {"t": 1.0, "event": "start"},
        {"t": 10.0, "step": 100, "loss": 1.0, "samples_per_s": 100.0},  # warm-up inside
        {"t": 11.0, "step": 200, "loss": 0.5, "samples_per_s": 1000.0},
        {"t": 12.0, "step": 300, "loss": 0.4, "samples_per_s": 3000.0},
    ]
    window = gc.train_window(metrics)
    assert window == (10.0, 12.0)
    assert gc.train_window(metrics[:2]) is None  # one report is no span
    assert gc.samples_per_s(metrics) == 2000.0

    def sample(t: float, util: float, sm: float | None) -> dict[str, Any]:
        device = {"index": 0, "util": util, "sm": sm, "mem_used": 2**30}
        return {"t": t, "attributed": True, "devices": [device]}

    samples = [sample(5.0, 0.0, 0.0), sample(10.5, 1.0, 0.4), sample(11.5, 1.0, 0.6)]
    fig = gc.gpu_figures(samples, window)
    assert fig["samples"] == 2 and fig["devices"][0]["sm_mean"] == pytest.approx(0.5)
    assert gc.busy_of(fig) == (pytest.approx(0.5), pytest.approx(0.5), 1.0)
    no_gpm = gc.gpu_figures([sample(11.0, 0.9, None)], None)
    assert gc.busy_of(no_gpm) == (0.9, None, 0.9)


def test_a_step_over_the_whole_budget_is_skipped_not_started(tmp_path: Path) -> None:
    args = gc.parse_args(["--work", str(tmp_path), "--budget-s", "10"])
    check = gc.Check(args)
    started: list[float] = []

    def step(budget: float) -> Any:
        started.append(budget)
        return gc.StepResult(1, "x", "PASS", "", 0.0)

    result = check._timed(1, step)
    assert result.result == "SKIP" and "no time left" in result.figures and not started
    check.log.close()
