"""The GPU check (issue 11): the harness on a real GPU, in one prepared run of under 8 minutes.

Made for the device tool's one-GPU machine (an H200, Python 3.12 at ``python3``, no network;
PyTorch, numpy, psutil, nvidia-ml-py, aiohttp and httpx installed there; sqlmodel,
SQLAlchemy, pydantic and its helpers, discord.py and APScheduler not). Here, once::

    make gpu-wheels          # cp312 manylinux wheels of what the device lacks -> bench/wheels/

then the device tool's ``run`` with::

    command   = "PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --budget-s 370"
    carry     = ["bench/wheels"]
    timeout_s = 390

(15 minutes of device time in all: a cold start of 1-2 minutes, this run, and room for one
warm rerun of the same length; the script stops itself before ``timeout_s``.) The table,
the raw JSON and the whole log come back under ``$OUT``; write the table into this tree's
docs/BENCHMARKS.md with::

    .venv/bin/python bench/gpu_check.py --apply <files_at>/gpu_check.json

A rerun of some steps only: ``--steps 3,4``, then ``--apply first.json rerun.json`` (later
files win, step by step).

What it does, each part with a time budget and one ``PASS``/``FAIL``/``SKIP`` line:

0. setup: the modules the device lacks go into a folder of their own from the carried
   wheels (``pip install --no-index --no-deps --target``) and the project runs from this
   tree through ``PYTHONPATH``: nothing is built (hatchling is not on the device), and no
   ``--system-site-packages`` venv is made, because the device's ``python3`` is itself a
   venv (/opt/torch/.venv) and a venv made from a venv sees the *base* interpreter's
   site-packages, without that torch. Then ``python -m harness --version``, the spec files
   and overrides below validated, NVML and torch's view of CUDA;
1. the NVML probe (``harness.runtime.probes.GpuProbe``): util and GPM SM activity per
   device while a bf16 matmul loop runs;
2. the ``echo`` preset on CUDA through the supervisor (``harness run echo --set
   device=cuda``) at the trainer's default GPU batch, steps sized to about 30 s of training
   from a short bare calibration run: SM activity, util, samples/s (target >= 80 % busy);
3. a starved GPU job (tiny kernels with sleeps) that must be aborted for low GPU
   utilisation, with SM activity in the incident's evidence;
4. a ``device = "auto"`` job that keeps the GPU busy and the CPUs idle and does not name
   its device: it must not be judged (and aborted) by its CPU;
5. ``echo-ddp`` with 1 process on CUDA, when that preset exists.

It prints one table (step, result, figures, seconds), writes it into docs/BENCHMARKS.md
under the "GPU check" heading (between its markers, replacing the previous table), and
``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log`` under ``$OUT`` when set.

    python bench/gpu_check.py --dry-run     # no GPU needed: setup decisions, the table, the
                                            # docs writer on a temp copy; exit 0

The job modes (``--job busy|starved|sample|inspect``) are this file run as a child.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

# Run as a script, this file's folder is sys.path[0] and bench/mistakes.py, bench/sidecar.py
# would shadow the packages of the same names.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

ROOT = _HERE.parent
THIS = Path(__file__).resolve()
WHEELS = ROOT / "bench" / "wheels"
DOCS = ROOT / "docs" / "BENCHMARKS.md"
HEADING = "## GPU check — `bench/gpu_check.py` (issue 11)"
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"

#: what the device lacks, carried as wheels: (distribution, import name)
CARRIED: tuple[tuple[str, str], ...] = (
    ("sqlmodel", "sqlmodel"),
    ("SQLAlchemy", "sqlalchemy"),
    ("pydantic", "pydantic"),
    ("pydantic_core", "pydantic_core"),
    ("annotated-types", "annotated_types"),
    ("typing-inspection", "typing_inspection"),
    ("typing_extensions", "typing_extensions"),
    ("discord.py", "discord"),
    ("APScheduler", "apscheduler"),
    ("tzlocal", "tzlocal"),
)
#: what the device has: (distribution, import name, minimum version from pyproject.toml)
PRESENT: tuple[tuple[str, str, str], ...] = (
    ("torch", "torch", "2.4"),
    ("numpy", "numpy", "1.26"),
    ("psutil", "psutil", "5.9"),
    ("nvidia-ml-py", "pynvml", "12.535"),
    ("aiohttp", "aiohttp", "3.9"),
    ("httpx", "httpx", "0.27"),
)
#: dependencies the check never exercises, and what goes without them on the device
NOT_NEEDED: tuple[tuple[str, str], ...] = (
    ("matplotlib", "charts are drawn by a child process; a heartbeat without one goes alone"),
)

#: seconds each part may take at most (the whole run also stops at --budget-s)
BUDGET_S = {0: 50.0, 1: 30.0, 2: 110.0, 3: 55.0, 4: 55.0, 5: 70.0}
STEP_NAMES = {
    0: "setup",
    1: "NVML probe",
    2: "echo on CUDA",
    3: "starved GPU job",
    4: "auto-device GPU job",
    5: "echo-ddp, 1 process",
}
TARGET_BUSY = 0.80
CUDA_BATCH = 2048  # model.config.CUDA_BATCH, the trainer's default batch on CUDA
# Steps 3 and 4: grace and window short enough to decide well inside the step's budget.
GRACE_S, WINDOW_S = 10, 10
SAMPLE_EVERY_S = 0.5

ECHO_OVERRIDES_FIXED = [
    "device=cuda",
    "args.device=cuda",
    f"args.batch={CUDA_BATCH}",
    "args.eval_every=0",  # train phase throughout; the final eval still decides the gate
    "args.checkpoint_every=0",
]
DDP_OVERRIDES_FIXED = ["torchrun.nproc_per_node=1", *ECHO_OVERRIDES_FIXED]


# -- results and the table ------------------------------------------------------------------


@dataclass
class StepResult:
    step: int
    name: str
    result: str  # PASS | FAIL | SKIP
    figures: str
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.result} step {self.step} {self.name}: {self.figures} ({self.seconds:.0f} s)"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_table(results: Sequence[StepResult]) -> str:
    rows = ["| step | result | figures | seconds |", "|---|---|---|---:|"]
    for r in sorted(results, key=lambda r: r.step):
        rows.append(
            f"| {r.step} {_cell(r.name)} | **{r.result}** | {_cell(r.figures)} | {r.seconds:.0f} |"
        )
    return "\n".join(rows)


def render_block(results: Sequence[StepResult], meta: dict[str, Any]) -> str:
    """The part of docs/BENCHMARKS.md between the markers: what ran where, and the table."""
    failed = [r for r in results if r.result == "FAIL"]
    head = (
        f"{meta.get('when', '?')}, {meta.get('machine', '?')}; {meta.get('software', '')}. "
        f"Total {meta.get('total_s', 0):.0f} s (budget {meta.get('budget_s', 0):.0f} s)."
    )
    if meta.get("dry_run"):
        head = f"Dry run, no GPU steps: {head}"
    ran = [r for r in results if r.step > 0 and r.result != "SKIP"]
    if failed:
        verdict = "Expectations **not met**: " + "; ".join(
            f"step {r.step} {r.name}" for r in failed
        )
    elif ran:
        skipped = len([r for r in results if r.result == "SKIP"])
        verdict = f"Every expectation met ({len(ran)} GPU steps run, {skipped} skipped)."
    else:
        verdict = "No GPU step ran: nothing was measured."
    return "\n".join([BEGIN, head, "", render_table(results), "", verdict, END])


def write_section(path: Path, block: str) -> None:
    """Put ``block`` (markers included) into ``path`` under the GPU check heading.

    Replaces what is between the markers when they are there; else inserts the block at
    the end of the heading's section, adding the heading when it is missing. Everything
    else in the file stays as it was. Written whole (temp file and rename).
    """
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        new = before + block + after
    elif HEADING in text:
        start = text.index(HEADING) + len(HEADING)
        nxt = text.find("\n## ", start)
        cut = len(text) if nxt < 0 else nxt + 1
        section = text[:cut].rstrip("\n")
        new = section + "\n\n" + block + "\n" + ("\n" + text[cut:] if nxt >= 0 else "")
    else:
        new = text.rstrip("\n") + "\n\n" + HEADING + "\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def results_to_json(results: Sequence[StepResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "steps": [asdict(r) for r in results]}


def results_from_json(docs: Sequence[dict[str, Any]]) -> tuple[list[StepResult], dict[str, Any]]:
    """Merge result files step by step, later files winning; the last file's meta."""
    merged: dict[int, StepResult] = {}
    meta: dict[str, Any] = {}
    for doc in docs:
        meta = dict(doc.get("meta", {}))
        for raw in doc.get("steps", []):
            r = StepResult(**raw)
            merged[r.step] = r
    return [merged[k] for k in sorted(merged)], meta


# -- wheels and the install decision --------------------------------------------------------


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    path: Path
    dist: str  # normalised
    version: str
    tags: tuple[str, str, str]  # python, abi, platform

    def fits(self, python: tuple[int, int]) -> bool:
        """Installable on CPython ``python`` on x86-64 Linux (a deliberately plain test)."""
        py, abi, plat = self.tags
        cp = f"cp{python[0]}{python[1]}"
        pys = py.split(".")
        py_ok = cp in pys or "py3" in pys or f"py{python[0]}{python[1]}" in pys
        if "abi3" in abi.split("."):
            py_ok = any(
                p.startswith("cp3") and int(p[3:] or 0) <= python[1] for p in pys if p[3:].isdigit()
            )
        abi_ok = any(a in ("none", "abi3", cp) for a in abi.split("."))
        plat_ok = plat == "any" or any(
            p.endswith("x86_64") and ("manylinux" in p or p.startswith("linux"))
            for p in plat.split(".")
        )
        return py_ok and abi_ok and plat_ok


def parse_wheel(path: Path) -> Wheel | None:
    parts = path.name[: -len(".whl")].split("-") if path.name.endswith(".whl") else []
    if len(parts) not in (5, 6):
        return None
    return Wheel(path, normalise(parts[0]), parts[1], (parts[-3], parts[-2], parts[-1]))


@dataclass
class WheelReport:
    folder: Path
    found: dict[str, Wheel] = field(default_factory=dict)  # carried dist -> its wheel
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    unfit: list[str] = field(default_factory=list)  # wheel file names not for this Python
    extra: list[str] = field(default_factory=list)  # wheels of nothing we carry

    @property
    def complete(self) -> bool:
        return not (self.missing or self.duplicates or self.unfit)

    def summary(self) -> str:
        if not self.folder.is_dir():
            return f"no folder {self.folder} (make gpu-wheels, and carry it)"
        bits = [f"{len(self.found)}/{len(CARRIED)} wheels in {self.folder}"]
        if self.missing:
            bits.append("missing: " + ", ".join(self.missing))
        if self.duplicates:
            bits.append("more than one version: " + ", ".join(sorted(self.duplicates)))
        if self.unfit:
            bits.append("not for this Python: " + ", ".join(self.unfit))
        if self.extra:
            bits.append("ignored: " + ", ".join(self.extra))
        return "; ".join(bits)


def discover_wheels(folder: Path, python: tuple[int, int]) -> WheelReport:
    """Which carried distributions have exactly one wheel in ``folder`` that fits ``python``."""
    report = WheelReport(folder)
    wanted = {normalise(d) for d, _ in CARRIED}
    by_dist: dict[str, list[Wheel]] = {}
    for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        wheel = parse_wheel(path)
        if wheel is None or wheel.dist not in wanted:
            report.extra.append(path.name)
            continue
        by_dist.setdefault(wheel.dist, []).append(wheel)
    for dist, _ in CARRIED:
        wheels = by_dist.get(normalise(dist), [])
        if not wheels:
            report.missing.append(dist)
        elif len(wheels) > 1:
            report.duplicates[dist] = [w.path.name for w in wheels]
        elif not wheels[0].fits(python):
            report.unfit.append(wheels[0].path.name)
        else:
            report.found[dist] = wheels[0]
    return report


def pins() -> list[str]:
    """``name==version`` of every carried distribution, as this interpreter has them."""
    return [f"{dist}=={importlib.metadata.version(dist)}" for dist, _ in CARRIED]


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Plan:
    """How the project and its dependencies are made importable for the GPU steps."""

    python: str
    python_version: tuple[int, int]
    in_venv: bool
    missing: list[str]  # carried distributions whose module is not importable here
    present: dict[str, str | None]  # device-side distributions and their versions
    too_old: list[str]
    wheels: WheelReport
    install: bool
    site: Path | None
    pythonpath: list[str]
    decisions: list[str]
    problems: list[str]

    def install_command(self) -> list[str]:
        files = [str(w.path) for w in self.wheels.found.values()]
        return [
            self.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--no-deps",
            "--no-cache-dir",
            "--target",
            str(self.site),
            *files,
        ]


def plan_setup(wheels_dir: Path, work: Path) -> Plan:
    py = (sys.version_info[0], sys.version_info[1])
    in_venv = sys.prefix != sys.base_prefix
    missing = [d for d, mod in CARRIED if importlib.util.find_spec(mod) is None]
    present = {d: _dist_version(d) for d, _, _ in PRESENT}
    too_old = [
        f"{d} {present[d]} < {low}"
        for d, _, low in PRESENT
        if present[d] is not None and _version_tuple(present[d] or "") < _version_tuple(low)
    ]
    report = discover_wheels(wheels_dir, py)
    decisions: list[str] = []
    problems: list[str] = []
    absent = [d for d, v in present.items() if v is None]
    if absent:
        problems.append("not installed here (expected on the device): " + ", ".join(absent))
    if too_old:
        problems.append("too old: " + ", ".join(too_old))
    install = False
    site: Path | None = None
    if not missing:
        decisions.append("every carried module is importable here: nothing to install")
    elif report.complete:
        install, site = True, work / "site"
        decisions.append(
            f"{len(missing)} module(s) missing ({', '.join(missing)}): install the "
            f"{len(report.found)} wheels into {site} (pip --no-index --no-deps --target)"
        )
    else:
        problems.append(f"missing here: {', '.join(missing)}; wheels: {report.summary()}")
    hatchling = importlib.util.find_spec("hatchling") is not None
    decisions.append(
        f"project from the tree through PYTHONPATH={ROOT}: nothing built "
        f"(hatchling {'present' if hatchling else 'absent'})"
    )
    if in_venv:
        decisions.append(
            f"no --system-site-packages venv: {sys.executable} is itself a venv "
            f"({sys.prefix}); one made from it would see {sys.base_prefix}'s site-packages, "
            "not its torch"
        )
    else:
        decisions.append("no venv: a target folder on PYTHONPATH isolates as much and is faster")
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = ([str(site)] if site else []) + [str(ROOT)] + extra
    return Plan(
        sys.executable, py, in_venv, missing, present, too_old, report, install, site, path,
        decisions, problems,
    )  # fmt: skip


def install(plan: Plan, timeout: float, log: Log) -> str | None:
    """Install the carried wheels into ``plan.site``; None when done, else the problem.

    pip where the interpreter has it; else each wheel unpacked as it is (what pip does for
    these: no scripts, no .data folders; checked here).
    """
    assert plan.site is not None
    if importlib.util.find_spec("pip") is not None:
        got = run_child(plan.install_command(), dict(os.environ), timeout, log, "install")
        if got.rc != 0:
            return f"pip install failed: {_tail(got.output, 400)}"
        return None
    log.say("setup: no pip here: unpacking the wheels instead")
    for wheel in plan.wheels.found.values():
        with zipfile.ZipFile(wheel.path) as z:
            names = z.namelist()
            if any(".data/" in n for n in names):
                return f"{wheel.path.name} has a .data folder: needs pip"
            z.extractall(plan.site)
    return None


# -- child processes ------------------------------------------------------------------------


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:]


class Log:
    """Everything the check prints and every child's output, also kept in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.raw(text)

    def raw(self, text: str) -> None:
        with self._lock:
            self._f.write(text.rstrip("\n") + "\n")
            self._f.flush()

    def close(self) -> None:
        self._f.close()


@dataclass
class Outcome:
    rc: int | None
    output: str
    seconds: float
    timed_out: bool


def run_child(
    cmd: Sequence[str], env: dict[str, str], timeout: float, log: Log, label: str
) -> Outcome:
    t0 = time.monotonic()
    log.raw(f"$ {label}: {' '.join(cmd)}")
    try:
        p = subprocess.run(
            list(cmd),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
        )
    except subprocess.TimeoutExpired as exc:
        parts = (exc.stdout, exc.stderr)
        out = "".join(
            x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in parts
        )
        log.raw(out)
        return Outcome(None, out, time.monotonic() - t0, True)
    log.raw(p.stdout + p.stderr)
    return Outcome(p.returncode, p.stdout + p.stderr, time.monotonic() - t0, False)


def _stop(p: subprocess.Popen[Any], waits: Sequence[tuple[int, float]]) -> None:
    """Signal ``p`` in turn (signal, seconds to wait) until it is gone; SIGKILL at the end."""
    for sig, wait in waits:
        if p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=wait)
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait()


class Sampler:
    """``--job sample`` beside a process: GpuProbe readings every 0.5 s into a JSONL file."""

    def __init__(self, env: dict[str, str], out: Path, pid: int, max_s: float) -> None:
        self.out = out
        cmd = [sys.executable, "-P", str(THIS), "--job", "sample", "--out", str(out)]
        cmd += ["--pid", str(pid), "--seconds", f"{max_s:.0f}"]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )

    def stop(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        _stop(self.proc, [(signal.SIGTERM, 5.0)])
        lines = read_jsonl(self.out)
        header = lines[0] if lines and "available" in lines[0] else {}
        return header, [x for x in lines if "devices" in x]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out


# -- figures --------------------------------------------------------------------------------


def train_window(metrics: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """Wall-clock span of training: the first to the last step line with samples/s or loss.

    The first report comes after warm-up (CUDA context, first kernels), so the span is the
    steady part that the utilisation rule judges.
    """
    ts = [float(m["t"]) for m in metrics if "step" in m and "loss" in m and "t" in m]
    if len(ts) < 2:
        return None
    return ts[0], ts[-1]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def gpu_figures(
    samples: Sequence[dict[str, Any]], window: tuple[float, float] | None
) -> dict[str, Any]:
    """Mean and max util and SM activity per device over ``window`` (all samples if None)."""
    chosen = [s for s in samples if window is None or window[0] <= s["t"] <= window[1]]
    per: dict[int, dict[str, list[float]]] = {}
    attributed = 0
    for s in chosen:
        attributed += bool(s.get("attributed"))
        for d in s.get("devices", []):
            slot = per.setdefault(int(d["index"]), {"util": [], "sm": [], "mem": []})
            for key in ("util", "sm"):
                if d.get(key) is not None:
                    slot[key].append(float(d[key]))
            if d.get("mem_used") is not None:
                slot["mem"].append(float(d["mem_used"]))
    devices = {}
    for index, slot in sorted(per.items()):
        devices[index] = {
            "util_mean": _mean(slot["util"]),
            "util_max": max(slot["util"], default=None),
            "sm_mean": _mean(slot["sm"]),
            "sm_max": max(slot["sm"], default=None),
            "mem_used_gib_max": max(slot["mem"], default=0.0) / 2**30,
            "n": len(slot["util"]),
        }
    return {"samples": len(chosen), "attributed": attributed, "devices": devices}


def busy_of(fig: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(busy, sm, util) of the busiest device: SM activity where read, else util."""
    best: tuple[float | None, float | None, float | None] = (None, None, None)
    for d in fig.get("devices", {}).values():
        sm, util = d.get("sm_mean"), d.get("util_mean")
        busy = sm if sm is not None else util
        if busy is not None and (best[0] is None or busy > best[0]):
            best = (busy, sm, util)
    return best


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.0f} %"


def shown(progress: dict[str, Any]) -> str:
    """What the supervisor last showed: the device and how it was resolved, the judged
    figure and its source, the job's CPU share (the keys a run's progress has today)."""
    device = str(progress.get("device", "?"))
    if progress.get("device_by"):
        device += f" ({progress['device_by']})"
    judged = progress.get("util", progress.get("gpu_busy"))
    source = progress.get("util_source") or ""
    return (
        f"device shown {device}; judged figure {pct(judged)} {source}".rstrip()
        + f"; job CPU {pct(progress.get('cpu_util'))} of the machine"
    )


def samples_per_s(metrics: Sequence[dict[str, Any]]) -> float | None:
    """Mean of the trainer's samples_per_s reports after the first (which holds warm-up)."""
    values = [float(m["samples_per_s"]) for m in metrics if "samples_per_s" in m]
    values = values[1:] if len(values) > 1 else values
    return _mean(values)


def mentions_sm_activity(incident: dict[str, Any]) -> bool:
    """The incident names SM activity (in its summary or evidence), not only 'util'."""
    text = str(incident.get("summary", "")) + " " + json.dumps(incident.get("evidence", {}))
    return re.search(r"\bsm[ _-]?(activity|util)|\bsm_", text.lower()) is not None


def util_aborts(incidents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        i
        for i in incidents
        if i.get("rule") == "utilisation" and i.get("severity") in ("abort", "error")
    ]


def judged_kind(incident: dict[str, Any]) -> str:
    """``CPU`` or ``GPU``: what a utilisation incident judged (its evidence, else its words)."""
    ev = incident.get("evidence") or {}
    label, device = str(ev.get("label", "")).upper(), str(ev.get("device", "")).lower()
    if label.startswith("CPU") or device.startswith("cpu"):
        return "CPU"
    if label.startswith("GPU") or device.startswith("cuda"):
        return "GPU"
    words = str(incident.get("summary", "")).lstrip().upper()
    return "CPU" if words.startswith("CPU") else "GPU" if "GPU" in words else "?"


def judge_starved(
    run: dict[str, Any] | None, incidents: Sequence[dict[str, Any]]
) -> tuple[bool, str]:
    """Step 3: aborted for low GPU utilisation, with SM activity as evidence."""
    if run is None:
        return False, "no run could be read (see the log)"
    status = run.get("status")
    aborts = util_aborts(incidents)
    if status != "aborted":
        return False, f"expected aborted, run ended {status}: {run.get('summary', '')}"
    if not aborts:
        rules = ", ".join(f"{i.get('rule')}: {i.get('summary')}" for i in incidents) or "none"
        return False, f"aborted, but not by the utilisation rule (incidents: {rules})"
    inc = aborts[0]
    summary = str(inc.get("summary", ""))
    if judged_kind(inc) != "GPU":
        return False, f"aborted for utilisation, but not as a GPU job: {summary}"
    if not mentions_sm_activity(inc):
        return False, f"aborted for GPU utilisation without SM-activity evidence: {summary}"
    return True, f"aborted: {summary}"


def judge_auto(run: dict[str, Any] | None, incidents: Sequence[dict[str, Any]]) -> tuple[bool, str]:
    """Step 4: a busy GPU job with idle CPUs that names no device is not aborted."""
    if run is None:
        return False, "no run could be read (see the log)"
    status = run.get("status")
    for inc in incidents:
        if inc.get("rule") == "utilisation" and judged_kind(inc) == "CPU":
            return False, f"judged by its CPU ({inc.get('severity')}): {inc.get('summary', '')}"
    aborts = util_aborts(incidents)
    if aborts:
        return False, f"aborted for utilisation: {aborts[0].get('summary', '')}"
    if status != "succeeded":
        return False, f"expected succeeded, run ended {status}: {run.get('summary', '')}"
    return True, "succeeded, not judged by its CPU"


# -- the job modes (this file as a child) -------------------------------------------------------


def _reporter() -> Any:
    from harness.job import Reporter

    return Reporter()


def job_busy(seconds: float, announce: bool) -> int:
    """bf16 8192^3 matmuls, a sync every 20: the GPU busy, one CPU thread mostly waiting."""
    import torch

    rep = _reporter()
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    steps = max(1, int(seconds * 2))
    if announce:
        rep.start(total_steps=steps, device="cuda")
    else:  # device = "auto" must be resolved by the supervisor itself
        rep.emit(event="start", total_steps=steps)
    rep.phase("train")
    t_end, step, last = time.time() + seconds, 0, 0.0
    while time.time() < t_end:
        t0 = time.time()
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
        step += 1
        if time.time() - last >= 0.5:
            last = time.time()
            tflops = 20 * 2 * 8192**3 / max(last - t0, 1e-9) / 1e12
            rep.step(step, loss=1.0 / (1 + step), tflops=round(tflops, 1))
    rep.end(done=1, steps=step)
    return 0


def job_starved(seconds: float) -> int:
    """A 256-element add, a sync and a 50 ms sleep, over and over: the GPU almost idle."""
    import torch

    rep = _reporter()
    x = torch.zeros(256, device="cuda")
    torch.cuda.synchronize()
    rep.start(total_steps=max(1, int(seconds * 2)), device="cuda")
    rep.phase("train")
    t_end, step, last = time.time() + seconds, 0, 0.0
    while time.time() < t_end:
        x.add_(1.0)
        torch.cuda.synchronize()
        time.sleep(0.05)
        step += 1
        if time.time() - last >= 0.5:
            last = time.time()
            rep.step(step, loss=1.0 / (1 + step))
    rep.end(done=1, steps=step)
    return 0


def job_sample(out: Path, pid: int, seconds: float) -> int:
    """GpuProbe every 0.5 s, one JSON line per reading, until ``pid`` ends or SIGTERM."""
    import psutil

    from harness.runtime import GpuProbe, process_tree

    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with out.open("a", encoding="utf-8") as f, GpuProbe() as probe:
        header = {
            "available": probe.available,
            "reason": probe.unavailable_reason,
            "count": probe.device_count,
        }
        f.write(json.dumps(header) + "\n")
        f.flush()
        t_end = time.monotonic() + seconds
        while not stop and time.monotonic() < t_end and probe.available:
            pids = [p.pid for p in process_tree(pid)] if pid else []
            s = probe.sample(pids)
            row = {
                "t": time.time(),
                "attributed": s.attributed,
                "job_devices": list(s.job_devices),
                "devices": [
                    {
                        "index": d.index,
                        "name": d.name,
                        "util": d.util,
                        "sm": d.sm_activity,
                        "mem_used": d.mem_used_bytes,
                        "mem_total": d.mem_total_bytes,
                        "job_pids": d.job_pids,
                    }
                    for d in s.devices
                ],
            }
            f.write(json.dumps(row) + "\n")
            f.flush()
            if pid and not psutil.pid_exists(pid):
                break
            time.sleep(SAMPLE_EVERY_S)
    return 0


def job_inspect(checks: list[list[str]]) -> int:
    """One JSON line: harness version, presets, each spec (+ overrides) validated, NVML."""
    import harness
    from harness.core import apply_overrides
    from harness.runtime import GpuProbe, list_presets, load_spec

    result: dict[str, Any] = {"harness": harness.__version__, "presets": sorted(list_presets(None))}
    specs: dict[str, str] = {}
    for ref, *overrides in checks:
        key = " ".join([ref, *overrides])
        if ref not in result["presets"] and not ref.endswith(".toml"):
            specs[key] = "absent"
            continue
        try:
            spec, _ = load_spec(ref)
            apply_overrides(spec, overrides)
            specs[key] = "ok"
        except Exception as exc:
            specs[key] = f"{type(exc).__name__}: {exc}"
    result["specs"] = specs
    with GpuProbe() as probe:
        nvml: dict[str, Any] = {
            "available": probe.available,
            "reason": probe.unavailable_reason,
            "count": probe.device_count,
        }
        if probe.available:
            s = probe.sample()
            nvml["names"] = [d.name for d in s.devices]
            with contextlib.suppress(Exception):
                import pynvml

                driver = pynvml.nvmlSystemGetDriverVersion()
                nvml["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
    result["nvml"] = nvml
    print(json.dumps(result))
    return 0


_TORCH_PROBE = """
import json, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda,
        "available": torch.cuda.is_available(), "count": 0, "names": []}
if info["available"]:
    info["count"] = torch.cuda.device_count()
    info["names"] = [torch.cuda.get_device_name(i) for i in range(info["count"])]
print(json.dumps(info))
"""


# -- the check ------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    rc: int | None
    output: str
    seconds: float
    timed_out: bool
    run: dict[str, Any] | None
    incidents: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    gpu_header: dict[str, Any]
    gpu_samples: list[dict[str, Any]]


def starved_spec(seconds: float) -> str:
    return _spec_toml("gpu-starved", "starved", seconds, device="cuda", gates={})


def auto_spec(seconds: float) -> str:
    return _spec_toml("gpu-auto", "busy", seconds, device="auto", gates={"done": ">= 1"})


def _spec_toml(name: str, mode: str, seconds: float, *, device: str, gates: dict[str, str]) -> str:
    command = ["{python}", "-P", str(THIS), "--job", mode, "--seconds", f"{seconds:.0f}"]
    lines = [
        f"name = {json.dumps(name)}",
        f"command = {json.dumps(command)}",
        f"device = {json.dumps(device)}",
        "",
        "[watch]",
        f"util_grace_s = {GRACE_S}",
        f"util_window_s = {WINDOW_S}",
        "stall_s = 60",
        "min_ram_free_gb = 1.0",
        "int_grace_s = 5",
        "term_grace_s = 3",
    ]
    if gates:
        lines += ["", "[gates]", *(f"{k} = {json.dumps(v)}" for k, v in gates.items())]
    return "\n".join(lines) + "\n"


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_s
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        out = os.environ.get("OUT")
        self.out = Path(out) if out else None
        self.log = Log((self.out or self.work) / "gpu_check.log")
        self.env: dict[str, str] = {}
        self.meta: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.node() or 'host'}, {os.cpu_count()} CPUs",
            "software": f"Python {platform.python_version()}",
            "budget_s": args.budget_s,
            "dry_run": bool(args.dry_run),
        }
        self.presets: list[str] = []
        self.steps_per_s: float | None = None
        self.bare_samples_per_s: float | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # the whole run ----------------------------------------------------------------------

    def run(self) -> int:
        log = self.log
        wanted = self.args.steps
        log.say(f"GPU check: work dir {self.work}, budget {self.args.budget_s:.0f} s")
        results = [self._timed(0, self.setup)]
        setup_ok = results[0].result == "PASS"
        cuda = results[0].detail.get("torch", {})
        stop_reason = None
        if not setup_ok:
            stop_reason = "not run: setup failed"
        elif not cuda.get("available"):
            log.say("no CUDA device: stopping before the GPU steps")
            stop_reason = "not run: no CUDA device"
        elif self.args.dry_run:
            log.say("dry run: stopping before the GPU steps")
            stop_reason = "not run: dry run"
        steps = {1: self.step_probe, 2: self.step_echo, 3: self.step_starved}
        steps.update({4: self.step_auto, 5: self.step_ddp})
        for n, fn in steps.items():
            if n not in wanted:
                continue
            if stop_reason is not None:
                results.append(StepResult(n, STEP_NAMES[n], "SKIP", stop_reason, 0.0))
                log.say(results[-1].line())
                continue
            results.append(self._timed(n, fn))
        return self.finish(results, gpu_ran=stop_reason is None)

    def _timed(self, n: int, fn: Callable[[float], StepResult]) -> StepResult:
        budget = min(BUDGET_S[n], self.left() - 5)
        t0 = time.monotonic()
        if budget < 15:
            r = StepResult(n, STEP_NAMES[n], "SKIP", f"no time left ({self.left():.0f} s)", 0.0)
        else:
            self.log.raw(f"--- step {n} {STEP_NAMES[n]} (budget {budget:.0f} s)")
            try:
                r = fn(budget)
            except Exception as exc:  # the table is written whatever happens
                r = StepResult(n, STEP_NAMES[n], "FAIL", f"the check broke: {exc!r}", 0.0)
        r.seconds = time.monotonic() - t0
        self.log.say(r.line())
        return r

    def finish(self, results: list[StepResult], *, gpu_ran: bool) -> int:
        self.meta["total_s"] = time.monotonic() - self.t0
        block = render_block(results, self.meta)
        self.log.say("\n" + render_table(results) + "\n")
        doc = results_to_json(results, self.meta)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "gpu_check.json").write_text(json.dumps(doc, indent=1) + "\n")
            (self.out / "gpu_check.md").write_text(block + "\n")
        (self.work / "gpu_check.json").write_text(json.dumps(doc, indent=1) + "\n")
        docs = Path(self.args.docs)
        if gpu_ran:
            write_section(docs, block)
            self.log.say(f"docs: table written into {docs}")
        else:  # prove the writer on a copy; the real file keeps its measured table
            copy = self.work / docs.name
            if docs.exists():
                shutil.copyfile(docs, copy)
            write_section(copy, block)
            text = copy.read_text(encoding="utf-8")
            ok = text.count(BEGIN) == 1 and text.count(END) == 1 and HEADING in text
            self.log.say(
                f"docs: {'table written into a copy' if ok else 'WRITER FAILED on a copy'}: "
                f"{copy} ({docs} untouched)"
            )
            if not ok:
                return 1
        self.log.close()
        failed = [r for r in results if r.result == "FAIL"]
        if failed:
            return 1
        return 0 if gpu_ran or self.args.dry_run else 1

    # step 0 -----------------------------------------------------------------------------

    def setup(self, budget: float) -> StepResult:
        log, t_end = self.log, time.monotonic() + budget
        plan = plan_setup(Path(self.args.wheels), self.work)
        interp = f"{plan.python} (Python {platform.python_version()}, venv: {plan.in_venv})"
        log.say(f"setup: interpreter {interp}")
        log.say(f"setup: wheels: {plan.wheels.summary()}")
        for d in plan.decisions:
            log.say(f"setup: {d}")
        detail: dict[str, Any] = {"decisions": plan.decisions, "problems": plan.problems}
        detail["present"] = plan.present
        fail = list(plan.problems)
        importable = not plan.missing
        if plan.install:
            if self.args.dry_run:
                log.say("setup: dry run, not installing: " + " ".join(plan.install_command()))
            else:
                problem = install(plan, t_end - time.monotonic(), log)
                if problem:
                    fail.append(problem)
                importable = not problem
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
        env.update(
            PYTHONPATH=os.pathsep.join(plan.pythonpath),
            HARNESS_HOME=str(self.work / "home"),
            HARNESS_DATA_DIR=str(self.work / "data"),
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        specs = self.work / "specs"
        specs.mkdir(exist_ok=True)
        (specs / "gpu-starved.toml").write_text(starved_spec(45))
        (specs / "gpu-auto.toml").write_text(auto_spec(GRACE_S + WINDOW_S + 12))
        inspect: dict[str, Any] = {}
        if importable:  # the harness with the modules as the GPU steps will see them
            checks = [
                ["echo", *ECHO_OVERRIDES_FIXED, "args.steps=1000"],
                [str(specs / "gpu-starved.toml")],
                [str(specs / "gpu-auto.toml")],
                ["echo-ddp", *DDP_OVERRIDES_FIXED, "args.steps=1000"],
            ]
            cmd = [sys.executable, "-P", str(THIS), "--job", "inspect"]
            got = run_child(
                [*cmd, "--checks", json.dumps(checks)],
                env,
                t_end - time.monotonic(),
                log,
                "inspect",
            )
            try:
                inspect = json.loads(got.output.strip().splitlines()[-1])
            except (ValueError, IndexError):
                last = (got.output.strip().splitlines() or ["no output"])[-1]
                fail.append(f"the harness does not run: {_tail(last, 300)}")
        if inspect:
            self.presets = list(inspect.get("presets", []))
            detail["inspect"] = inspect
            log.say(f"setup: harness {inspect.get('harness')} imports; NVML: {inspect.get('nvml')}")
            for key, verdict in inspect.get("specs", {}).items():
                log.say(f"setup: spec {key}: {verdict}")
                if verdict not in ("ok", "absent"):
                    fail.append(f"spec {key}: {verdict}")
            if "echo-ddp" not in self.presets:
                log.say("setup: echo-ddp preset not present (step 5 will skip)")
        torch_info: dict[str, Any] = {}
        if plan.present.get("torch"):
            got = run_child(
                [sys.executable, "-c", _TORCH_PROBE], env, t_end - time.monotonic(), log, "torch"
            )
            try:
                torch_info = json.loads(got.output.strip().splitlines()[-1])
            except (ValueError, IndexError):
                torch_info = {"available": False, "error": _tail(got.output, 300)}
            if got.timed_out:
                fail.append(f"torch did not answer within the setup budget ({budget:.0f} s)")
            log.say(f"cuda: available={torch_info.get('available')} {torch_info}")
        detail["torch"] = torch_info
        nvml = inspect.get("nvml", {})
        if torch_info.get("names"):
            self.meta["machine"] = f"{', '.join(torch_info['names'])}, {os.cpu_count()} CPUs"
        self.meta["software"] = (
            f"Python {platform.python_version()}, torch {torch_info.get('torch', '?')}"
            f" (CUDA {torch_info.get('cuda') or 'none'}), driver {nvml.get('driver', 'n/a')}, "
            f"harness {inspect.get('harness', '?')}"
        )
        nvml_text = (
            f"yes, {nvml.get('count')} GPU"
            if nvml.get("available")
            else f"no ({nvml.get('reason')})"
        )
        figures = (
            f"{len(plan.wheels.found)} wheels installed"
            if plan.install and not self.args.dry_run
            else "would install the wheels"
            if plan.install
            else "nothing to install"
        )
        figures += (
            f"; project from the tree (PYTHONPATH); harness {inspect.get('harness', '?')}; torch "
            f"{torch_info.get('torch', '?')}, CUDA {'yes' if torch_info.get('available') else 'no'}"
            f"; NVML {nvml_text}"
        )
        if fail:
            return StepResult(0, "setup", "FAIL", "; ".join(fail), 0.0, detail)
        return StepResult(0, "setup", "PASS", figures, 0.0, detail)

    # step 1 -----------------------------------------------------------------------------

    def step_probe(self, budget: float) -> StepResult:
        seconds = max(4.0, min(8.0, budget - 20))
        metrics = self.work / "s1-metrics.jsonl"
        env = dict(self.env, HARNESS_METRICS=str(metrics))
        cmd = [sys.executable, "-P", str(THIS), "--job", "busy", "--seconds", f"{seconds:.0f}"]
        job_log = self.work / "s1-job.log"
        with job_log.open("w") as out:
            job = subprocess.Popen(
                [*cmd, "--announce-device"], env=env, cwd=ROOT, stdout=out, stderr=out
            )
        sampler = Sampler(self.env, self.work / "s1-gpu.jsonl", job.pid, budget)
        try:
            job.wait(timeout=budget - 3)
        except subprocess.TimeoutExpired:
            _stop(job, [(signal.SIGTERM, 3.0)])
        header, samples = sampler.stop()
        self.log.raw(job_log.read_text(errors="replace"))
        fig = gpu_figures(samples, train_window(read_jsonl(metrics)))
        detail = {"header": header, "figures": fig, "job_rc": job.returncode}
        if not header.get("available"):
            why = header.get("reason") or "no reading"
            return StepResult(1, STEP_NAMES[1], "FAIL", f"NVML unavailable: {why}", 0.0, detail)
        parts, ok = [], job.returncode == 0 and bool(fig["devices"])
        for index, d in fig["devices"].items():
            parts.append(
                f"GPU {index}: util {pct(d['util_mean'])} (max {pct(d['util_max'])}), "
                f"SM activity {pct(d['sm_mean'])} (max {pct(d['sm_max'])}), "
                f"{d['mem_used_gib_max']:.1f} GiB, {d['n']} samples"
            )
        parts.append(f"job's pids seen by NVML in {fig['attributed']}/{fig['samples']} samples")
        _busy, sm, util = busy_of(fig)
        if job.returncode != 0:
            tail = _tail(job_log.read_text(errors="replace"), 300)
            parts.append(f"workload exited {job.returncode}: {tail}")
        if sm is None:
            ok = False
            parts.append("SM activity unreadable (no GPM): expectation failed")
        elif sm < 0.5 or (util or 0) < 0.5:
            ok = False
            parts.append("a bf16 matmul loop should read >= 50 %: expectation failed")
        result = "PASS" if ok else "FAIL"
        return StepResult(1, STEP_NAMES[1], result, "; ".join(parts), 0.0, detail)

    # runs through the supervisor ------------------------------------------------------------

    def harness_json(self, *args: str) -> Any:
        got = run_child(
            [sys.executable, "-m", "harness", *args], self.env, 60, self.log, "harness " + args[0]
        )
        try:
            return json.loads(got.output)
        except ValueError:
            self.log.say(f"harness {' '.join(args)}: no JSON: {_tail(got.output, 400)}")
            return None

    def harness_run(
        self, ref: str, overrides: Sequence[str], budget: float, tag: str, *, sample: bool = True
    ) -> RunOutcome:
        """``harness run`` in the foreground, stopped at ``budget``; NVML sampled beside it
        when ``sample`` (not where the supervisor's own reading is what is judged: a second
        GPM reader should change nothing, but those steps need not depend on it)."""
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "harness", "run", ref, "--foreground", "--heartbeat", "600"]
        for o in overrides:
            cmd += ["--set", o]
        self.log.raw("$ " + " ".join(cmd))
        p = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sampler = (
            Sampler(self.env, self.work / f"{tag}-gpu.jsonl", p.pid, budget) if sample else None
        )
        lines: list[str] = []

        def pump() -> None:
            assert p.stdout is not None
            for line in p.stdout:
                lines.append(line)
                self.log.raw(f"[{tag}] {line}")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            p.wait(timeout=max(budget - 12, 5))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.log.say(f"{tag}: over its budget, aborting the run (Ctrl-C to harness run)")
            _stop(p, [(signal.SIGINT, 8.0), (signal.SIGTERM, 3.0)])
        reader.join(timeout=5)
        header, samples = sampler.stop() if sampler is not None else ({}, [])
        output = "".join(lines)
        m = re.search(r"started (\S+)", output)
        run_id = m.group(1) if m else None
        if run_id is None:
            runs = self.harness_json("runs", "--json", "--limit", "1")
            run_id = runs[0]["id"] if runs else None
        run = self.harness_json("status", run_id, "--json") if run_id else None
        if not isinstance(run, dict) and run_id:  # another way in before giving up
            runs = self.harness_json("runs", "--json", "--limit", "50") or []
            run = next((r for r in runs if isinstance(r, dict) and r.get("id") == run_id), None)
        incidents = self.harness_json("incidents", "--run", run_id, "--json") if run_id else None
        metrics: list[dict[str, Any]] = []
        if isinstance(run, dict) and run.get("run_dir"):
            metrics = read_jsonl(Path(run["run_dir"]) / "metrics.jsonl")
        return RunOutcome(
            p.returncode, output, time.monotonic() - t0, timed_out,
            run if isinstance(run, dict) else None, incidents or [], metrics, header, samples,
        )  # fmt: skip

    @staticmethod
    def _run_detail(o: RunOutcome) -> dict[str, Any]:
        return {
            "rc": o.rc,
            "timed_out": o.timed_out,
            "status": (o.run or {}).get("status"),
            "summary": (o.run or {}).get("summary"),
            "progress": (o.run or {}).get("progress"),
            "result": (o.run or {}).get("result"),
            "incidents": [
                {k: i.get(k) for k in ("rule", "severity", "summary", "evidence", "action")}
                for i in o.incidents
            ],
            "output_tail": _tail(o.output),
            "gpu": gpu_figures(o.gpu_samples, train_window(o.metrics)),
        }

    # step 2 -----------------------------------------------------------------------------

    def calibrate(self, timeout: float) -> tuple[float | None, str]:
        """Bare trainer, 500 steps at the CUDA batch: steps/s and samples/s to size the run."""
        out = self.work / "calibrate"
        metrics = out / "metrics.jsonl"
        env = dict(self.env, HARNESS_METRICS=str(metrics))
        cmd = [sys.executable, "-P", "-m", "model.train", "--task", "echo", "--device", "cuda"]
        cmd += ["--batch", str(CUDA_BATCH), "--steps", "500", "--log-every", "100"]
        cmd += ["--eval-every", "0", "--checkpoint-every", "0", "--out", str(out)]
        got = run_child(cmd, env, timeout, self.log, "calibrate")
        rate = samples_per_s(read_jsonl(metrics))
        if got.rc != 0 or rate is None:
            return None, f"bare trainer failed (rc {got.rc}): {_tail(got.output, 300)}"
        self.bare_samples_per_s = rate
        self.steps_per_s = rate / CUDA_BATCH
        return rate, ""

    def step_echo(self, budget: float) -> StepResult:
        t_end = time.monotonic() + budget
        rate, why = self.calibrate(min(40.0, budget / 3))
        if rate is None or self.steps_per_s is None:
            return StepResult(2, STEP_NAMES[2], "FAIL", why, 0.0)
        train_s = max(10.0, min(30.0, t_end - time.monotonic() - 40))
        steps = int(min(max(self.steps_per_s * train_s, 500), 500_000)) // 100 * 100
        overrides = [*ECHO_OVERRIDES_FIXED, f"args.steps={steps}"]
        o = self.harness_run("echo", overrides, t_end - time.monotonic(), "s2")
        detail = self._run_detail(o)
        detail.update(steps=steps, bare_samples_per_s=rate)
        busy, sm, util = busy_of(detail["gpu"])
        sps = samples_per_s(o.metrics)
        status = detail["status"]
        acc = ((o.run or {}).get("progress") or {}).get("metrics", {}).get("avg_bit_acc")
        parts = [
            f"{status}",
            f"SM activity {pct(sm)}, util {pct(util)}",
            f"{sps:,.0f} samples/s supervised" if sps else "samples/s n/a",
            f"{rate:,.0f} bare",
            f"batch {CUDA_BATCH}, {steps} steps",
        ]
        if acc is not None:
            parts.append(f"avg_bit_acc {acc:.4f}")
        parts.append(shown((o.run or {}).get("progress") or {}))
        aborts = util_aborts(o.incidents)
        if aborts:
            parts.append(f"aborted: {aborts[0].get('summary')}")
        ok = status == "succeeded" and busy is not None and busy >= TARGET_BUSY
        if busy is None or busy < TARGET_BUSY:
            parts.append(f"target >= {TARGET_BUSY * 100:.0f} % busy: missed")
        elif status != "succeeded":
            parts.append(f"expected succeeded: {detail['summary']}")
        return StepResult(2, STEP_NAMES[2], "PASS" if ok else "FAIL", "; ".join(parts), 0.0, detail)

    # step 3 -----------------------------------------------------------------------------

    def step_starved(self, budget: float) -> StepResult:
        spec = self.work / "specs" / "gpu-starved.toml"
        spec.write_text(starved_spec(max(GRACE_S + WINDOW_S + 5, budget - 15)))
        o = self.harness_run(str(spec), [], budget, "s3", sample=False)
        detail = self._run_detail(o)
        ok, verdict = judge_starved(o.run, o.incidents)
        run = o.run or {}
        took = (run.get("ended_at") or 0) - (run.get("started_at") or 0)
        aborts = util_aborts(o.incidents)
        evidence = json.dumps(aborts[0].get("evidence", {}))[:300] if aborts else "none"
        figures = (
            f"{verdict}; after {took:.0f} s (grace {GRACE_S} s + window {WINDOW_S} s); "
            f"{shown(run.get('progress') or {})}; evidence {evidence}"
        )
        return StepResult(3, STEP_NAMES[3], "PASS" if ok else "FAIL", figures, 0.0, detail)

    # step 4 -----------------------------------------------------------------------------

    def step_auto(self, budget: float) -> StepResult:
        spec = self.work / "specs" / "gpu-auto.toml"
        spec.write_text(auto_spec(min(GRACE_S + WINDOW_S + 12, budget - 20)))
        o = self.harness_run(str(spec), [], budget, "s4", sample=False)
        detail = self._run_detail(o)
        ok, verdict = judge_auto(o.run, o.incidents)
        progress = (o.run or {}).get("progress") or {}
        others = [f"{i.get('rule')}: {i.get('summary')}" for i in o.incidents]
        figures = f"{verdict}; {shown(progress)}"
        if others:
            figures += "; incidents: " + " | ".join(others)
        return StepResult(4, STEP_NAMES[4], "PASS" if ok else "FAIL", figures, 0.0, detail)

    # step 5 -----------------------------------------------------------------------------

    def step_ddp(self, budget: float) -> StepResult:
        if "echo-ddp" not in self.presets:
            return StepResult(5, STEP_NAMES[5], "SKIP", "echo-ddp preset not present", 0.0)
        train_s = max(8.0, min(15.0, budget - 50))
        steps_per_s = self.steps_per_s or 100.0
        steps = int(min(max(steps_per_s * train_s, 300), 300_000)) // 100 * 100
        o = self.harness_run(
            "echo-ddp", [*DDP_OVERRIDES_FIXED, f"args.steps={steps}"], budget, "s5"
        )
        detail = self._run_detail(o)
        detail["steps"] = steps
        _busy, sm, util = busy_of(detail["gpu"])
        sps = samples_per_s(o.metrics)
        status = detail["status"]
        ok = status == "succeeded"
        figures = (
            f"{status}: {detail['summary']}; SM activity {pct(sm)}, util {pct(util)}; "
            + (f"{sps:,.0f} samples/s" if sps else "samples/s n/a")
            + f"; {steps} steps"
        )
        if not ok:
            figures += f"; expected succeeded; output: {_tail(o.output, 300)}"
        return StepResult(5, STEP_NAMES[5], "PASS" if ok else "FAIL", figures, 0.0, detail)


# -- the command line -----------------------------------------------------------------------


def _steps(text: str) -> set[int]:
    try:
        chosen = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected step numbers like 1,2,5, got {text!r}"
        ) from None
    if not chosen <= {1, 2, 3, 4, 5}:
        raise argparse.ArgumentTypeError(f"steps are 1 to 5, got {text!r}")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/gpu_check.py", description="The GPU check (issue 11); see the module doc."
    )
    ap.add_argument("--dry-run", action="store_true", help="stop before the GPU steps; exit 0")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop everything after this")
    ap.add_argument("--steps", type=_steps, default={1, 2, 3, 4, 5}, help="e.g. 3,4 (default all)")
    ap.add_argument("--wheels", default=str(WHEELS), help="folder of carried wheels")
    ap.add_argument("--docs", default=str(DOCS), help="the BENCHMARKS.md to write the table into")
    ap.add_argument("--work", help="work folder (default: a new temp folder)")
    ap.add_argument("--apply", nargs="+", metavar="JSON", help="write these results into --docs")
    ap.add_argument("--pins", action="store_true", help="print the carried name==version pins")
    ap.add_argument("--check-wheels", action="store_true", help="report the wheels folder")
    # the job modes
    ap.add_argument(
        "--job", choices=["busy", "starved", "sample", "inspect"], help=argparse.SUPPRESS
    )
    ap.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--announce-device", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--checks", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _job(args: argparse.Namespace) -> int:
    if args.job == "busy":
        return job_busy(args.seconds, args.announce_device)
    if args.job == "starved":
        return job_starved(args.seconds)
    if args.job == "sample":
        return job_sample(Path(args.out), args.pid, args.seconds)
    return job_inspect(json.loads(args.checks or "[]"))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.job:
        return _job(args)
    if args.pins:
        print("\n".join(pins()))
        return 0
    if args.check_wheels:
        report = discover_wheels(Path(args.wheels), (3, 12))
        print(f"for CPython 3.12: {report.summary()}")
        return 0 if report.complete else 1
    if args.apply:
        docs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.apply]
        results, meta = results_from_json(docs)
        write_section(Path(args.docs), render_block(results, meta))
        print(render_table(results))
        print(f"written into {args.docs}")
        return 0
    return Check(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
