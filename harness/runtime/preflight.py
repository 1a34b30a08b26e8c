"""The pre-launch checklist (DESIGN section 5): stale processes, RAM headroom, the GPU
probe, the command, and the spec's preflight commands.

The GPU probe item: a job declared ``cuda`` (or ``cuda:N``) is refused when NVML cannot
read its GPUs (or has no GPU N), unless ``watch.gpu_probe = "optional"``, so the
utilisation rule never fails open. CPU and ``auto`` jobs have no such item (an ``auto``
job is resolved while it runs, and aborted if it turns out a GPU job nobody can read).

A preflight command speaks a tiny protocol: one line per check, ``PASS name: evidence``
or ``FAIL name: evidence``, and a non-zero exit when anything failed. Known check names
map to rules, and so to the mistakes they guard against (``gradient flow`` -> M-032,
``seq_len`` -> M-008); any other failure is a ``preflight`` item.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mistakes as ml
from harness.core.rules import check_gpu_probe, check_ram
from harness.core.spec import RunSpec
from harness.errors import SpecError
from harness.runtime import procs
from harness.runtime.probes import GpuProbe, read_ram
from harness.runtime.specs import SECRET_ENV, job_cwd, launch_env, resolve_command, run_env
from memory import Store, active_runs, processes_of_finished_runs

__all__ = [
    "CHECK_RULES",
    "SECRET_ENV",
    "CheckItem",
    "default_check_spec",
    "job_cwd",
    "launch_env",
    "preflight_checks",
    "run_env",
]

# The preflight protocol: one line per check, "PASS name: evidence" or "FAIL name: evidence".
_CHECK_LINE = re.compile(r"^\s*(PASS|FAIL)\s+([^:]{1,60}):\s*(.*)$")
#: check names a preflight command may print -> the rule (and so the mistakes) they enforce
CHECK_RULES = {
    "gradient flow": "gradient_flow",
    "gradient_flow": "gradient_flow",
    "seq_len": "input_coverage",
    "input coverage": "input_coverage",
    "input_coverage": "input_coverage",
}


@dataclass(frozen=True)
class CheckItem:
    """One line of the pre-launch checklist (``harness check`` prints these)."""

    name: str
    passed: bool
    evidence: str
    rule: str | None = None
    mistake_ids: tuple[str, ...] = ()


def _preflight_command(
    argv: list[str], spec: RunSpec, run_dir: Path, env: dict[str, str], cwd: Path
) -> tuple[list[CheckItem], int | None]:
    """Run one preflight command; PASS/FAIL lines become items, the exit code decides."""
    try:
        words = resolve_command(argv, run_dir=run_dir, args=spec.args)
    except SpecError as exc:
        return [CheckItem("preflight", False, str(exc), "preflight")], None
    try:
        proc = subprocess.run(
            words,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=spec.preflight_timeout_s,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        msg = f"{' '.join(argv)} timed out after {spec.preflight_timeout_s:g} s"
        return [CheckItem("preflight", False, msg, "preflight")], None
    except OSError as exc:
        return [CheckItem("preflight", False, f"cannot run {words[0]}: {exc}", "preflight")], None
    items = []
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        m = _CHECK_LINE.match(line)
        if m:
            name = m.group(2).strip()
            rule = CHECK_RULES.get(name.lower(), name if name in ml.RULE_LINKS else "preflight")
            items.append(
                CheckItem(
                    name,
                    m.group(1) == "PASS",
                    m.group(3).strip(),
                    rule,
                    ml.RULE_LINKS.get(rule, ()),
                )
            )
    if proc.returncode != 0 and not any(not i.passed for i in items):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        items.append(
            CheckItem(
                "preflight", False, f"exit code {proc.returncode}: {tail[0][:300]}", "preflight"
            )
        )
    return items, proc.returncode


def _cwd_check(cwd: str | None) -> CheckItem | None:
    """The spec's ``cwd`` (relative to this process's own) is a folder the job can enter."""
    if cwd is None:
        return None
    path = Path(cwd)  # as the launcher will use it
    shown = f"cwd {cwd!r}" + (f" ({path.absolute()})" if not path.is_absolute() else "")
    if not path.exists():
        return CheckItem("working directory", False, f"{shown} does not exist")
    if not path.is_dir():
        return CheckItem("working directory", False, f"{shown} is not a folder")
    if not os.access(path, os.X_OK):
        return CheckItem("working directory", False, f"{shown} cannot be entered (permission)")
    return CheckItem("working directory", True, str(path.absolute()))


def _gpu_check(spec: RunSpec, gpu: GpuProbe | None) -> CheckItem | None:
    """Whether a GPU job's utilisation can be read (``gpu``: the supervisor's probe, else
    one opened and closed here)."""
    if not spec.device.startswith("cuda"):
        return None  # a CPU job, or auto: resolved (and judged) while it runs
    probe = gpu if gpu is not None else GpuProbe()
    try:
        finding = check_gpu_probe(
            spec.device,
            spec.watch,
            available=probe.available,
            reason=probe.unavailable_reason,
            count=probe.device_count,
        )
    finally:
        if gpu is None:
            probe.close()
    if finding is None:
        return None
    return CheckItem(
        "GPU probe",
        finding.level != "abort",
        finding.summary,
        "gpu_probe",
        finding.mistake_ids,
    )


def preflight_checks(
    spec: RunSpec,
    *,
    run_dir: Path,
    run_id: str,
    store: Store | None,
    clean: bool,
    gpu: GpuProbe | None = None,
) -> list[CheckItem]:
    """The pre-launch checklist. ``clean`` terminates stale processes (else only reports).

    ``gpu`` is the probe the run will be watched with; without one, a ``cuda`` spec opens
    NVML here for the GPU probe item.
    """
    items: list[CheckItem] = []
    # Stale processes (M-025): only processes the harness started for runs that are over.
    records: list[procs.ProcRecord] = []
    active: set[str] = set()
    if store is not None:
        with store.read() as s:
            records = [
                procs.ProcRecord(p.pid, p.create_time, p.run_id)
                for p in processes_of_finished_runs(session=s)
            ]
            active = {r.id for r in active_runs(session=s)}
    if clean:
        killed = procs.sweep_stale(records, active_run_ids=active, runs_dir=run_dir.parent)
        survived = [k for k in killed if k.survived]
        text = (
            f"terminated {len(killed)} stale process(es): "
            + ", ".join(f"{k.pid} ({k.run_id})" for k in killed)
            if killed
            else "none found"
        )
        items.append(
            CheckItem(
                "stale processes",
                not survived,
                text,
                "stale_processes",
                ml.RULE_LINKS["stale_processes"],
            )
        )
    else:
        stale = [r for r in records if r.run_id not in active and procs.is_ours(r)]
        text = (
            f"{len(stale)} found: "
            + ", ".join(f"{r.pid} ({r.run_id})" for r in stale)
            + " (terminated at the next launch)"
            if stale
            else "none found"
        )
        items.append(
            CheckItem(
                "stale processes",
                not stale,
                text,
                "stale_processes",
                ml.RULE_LINKS["stale_processes"],
            )
        )
    if spec.launcher == "slurm":
        # The job runs on the cluster's nodes: this machine's RAM and GPUs are not its.
        # Their node agents sample both while it runs, under the same rules.
        items.append(_slurm_check())
    else:
        # RAM headroom before launch (M-030).
        ram = check_ram(read_ram().available_bytes, spec.watch, before_launch=True)
        items.append(
            CheckItem(
                "RAM headroom",
                ram.level == "ok",
                # A failing summary already names the minimum.
                ram.summary
                if ram.level != "ok"
                else f"{ram.summary} (minimum {spec.watch.min_ram_free_gb:g} GB)",
                "ram_headroom",
                ml.RULE_LINKS["ram_headroom"],
            )
        )
        # The GPU probe: a GPU job nobody can judge is refused, not run unwatched.
        gpu_item = _gpu_check(spec, gpu)
        if gpu_item is not None:
            items.append(gpu_item)
        if spec.launcher == "torchrun":
            items.append(_torchrun_check(spec, run_dir, gpu))
    # The command itself.
    try:
        resolve_command(spec.command, run_dir=run_dir)
        items.append(CheckItem("command", True, " ".join(spec.command)))
    except SpecError as exc:
        items.append(CheckItem("command", False, str(exc)))
    # The working directory: a missing one would fail the launch with nothing to show.
    cwd_item = _cwd_check(spec.cwd)
    if cwd_item is not None:
        items.append(cwd_item)
    # The spec's preflight commands (gradient flow M-032, input coverage M-008, ...).
    if spec.preflight and (cwd_item is None or cwd_item.passed):
        env = run_env(run_dir, run_id, spec.env)
        env[procs.MARKER_ENV] = run_id
        cwd = job_cwd(spec)
        for argv in spec.preflight:
            got, _ = _preflight_command(argv, spec, run_dir, env, cwd)
            items += got
    return items


# Where the interpreter finds torch's torchrun, without importing torch (seconds).
_FIND_TORCHRUN = (
    "import importlib.util as u, pathlib, sys\n"
    "s = u.find_spec('torch')\n"
    "p = s and s.submodule_search_locations and "
    "pathlib.Path(list(s.submodule_search_locations)[0], 'distributed', 'run.py')\n"
    "print(p if p and p.is_file() else '')"
)


def _torchrun_check(spec: RunSpec, run_dir: Path, gpu: GpuProbe | None) -> CheckItem:
    """torchrun can run the command: the interpreter it runs under has torch's
    ``torch.distributed.run``, and a GPU job has a GPU for each of its ranks."""
    from harness.runtime.launchers.torchrun import torchrun_argv

    cfg = spec.torchrun
    try:
        argv, _ = torchrun_argv(resolve_command(spec.command, run_dir=run_dir), cfg, run_dir)
    except SpecError as exc:
        return CheckItem("torchrun", False, str(exc))
    python = argv[0]
    try:
        found = subprocess.run(
            [python, "-P", "-c", _FIND_TORCHRUN],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckItem("torchrun", False, f"cannot ask {python} for torch: {exc}")
    if not found:
        return CheckItem(
            "torchrun", False, f"{python} has no torch.distributed.run (install torch for it)"
        )
    ranks = cfg.nproc_per_node
    if spec.device.startswith("cuda"):
        probe = gpu if gpu is not None else GpuProbe()
        try:
            count = probe.device_count if probe.available else None
        finally:
            if gpu is None:
                probe.close()
        if count is not None and ranks > count:
            return CheckItem(
                "torchrun",
                False,
                f"nproc_per_node = {ranks} on a machine with {count} GPU(s) (NVML): "
                "each rank needs its own GPU",
            )
    return CheckItem("torchrun", True, f"{ranks} rank(s) under {python} ({found})")


def _slurm_check() -> CheckItem:
    """Slurm's client is here and its controller answers (``sinfo``)."""
    if shutil.which("sbatch") is None:
        return CheckItem("slurm", False, "sbatch is not on PATH (install Slurm's client)")
    try:
        p = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a %D %T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckItem("slurm", False, f"sinfo did not answer: {exc}")
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        return CheckItem("slurm", False, f"the Slurm controller does not answer: {last[:200]}")
    partitions = [ln.split()[0] for ln in p.stdout.splitlines() if ln.strip()]
    return CheckItem("slurm", True, f"controller answers; partitions {', '.join(partitions)}")


def default_check_spec() -> RunSpec:
    """The spec ``harness check`` and the briefing use when none is given."""
    return RunSpec.model_validate({"name": "check", "command": [sys.executable]})
