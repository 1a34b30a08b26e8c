"""Spec files and presets on disk, and a spec's command resolved against this machine.

Presets are the specs shipped in ``harness/presets/`` plus ``*.toml`` in the user's
presets folder (the user's file wins on a name clash). :func:`load_preset` only ever
reads presets (what chat may pick); :func:`load_spec` also takes a path (what the
terminal may give). Parsing and validation are ``harness.core.spec``. Also here: what a
job is started with, whichever launcher starts it (:func:`launch_env`, :func:`job_cwd`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from harness._atomic import read_text
from harness.core.spec import RunSpec, args_to_flags, spec_from_toml
from harness.errors import NotFoundError, SpecError

__all__ = [
    "SECRET_ENV",
    "job_cwd",
    "launch_env",
    "list_presets",
    "load_preset",
    "load_spec",
    "resolve_command",
    "run_env",
    "with_resume",
]


def _read_spec(path: Path) -> RunSpec:
    text = read_text(path, kind="spec file", error=SpecError, missing=NotFoundError)
    return spec_from_toml(text, source=str(path))


def _builtin_presets() -> dict[str, str]:
    out = {}
    for entry in resources.files("harness").joinpath("presets").iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name[: -len(".toml")]] = entry.read_text(encoding="utf-8")
    return out


def list_presets(presets_dir: Path | None) -> dict[str, str]:
    """Preset name -> where it comes from (``built-in`` or the user's file)."""
    found = {name: "built-in" for name in _builtin_presets()}
    if presets_dir is not None and presets_dir.is_dir():
        for p in sorted(presets_dir.glob("*.toml")):
            found[p.stem] = str(p)
    return dict(sorted(found.items()))


def load_spec(ref: str, *, presets_dir: Path | None = None) -> tuple[RunSpec, str]:
    """A spec from a ``.toml`` path or a preset name; returns it with its source label.

    For the terminal only: a path can name any file. Chat must use :func:`load_preset`.
    """
    path = Path(ref)
    if ref.endswith(".toml") or path.is_file():
        return _read_spec(path), str(path)
    return load_preset(ref, presets_dir=presets_dir)


def load_preset(name: str, *, presets_dir: Path | None = None) -> tuple[RunSpec, str]:
    """A preset by name (the user's folder first, then the built-ins); never a path."""
    where = list_presets(presets_dir).get(name)
    if presets_dir is not None and where not in (None, "built-in"):
        user = presets_dir / f"{name}.toml"
        return _read_spec(user), str(user)
    builtin = _builtin_presets()
    if name in builtin:
        return spec_from_toml(builtin[name], source=f"preset {name}"), f"preset {name}"
    known = ", ".join(list_presets(presets_dir)) or "none"
    raise NotFoundError(f"no spec file or preset named {name!r} (presets: {known})")


def with_resume(argv: Sequence[str], resume: Sequence[str], checkpoint: str) -> list[str]:
    """``argv`` resumed from ``checkpoint``: the spec's ``resume`` words appended, each
    ``{checkpoint}`` replaced by its path (a rollback, a Slurm resubmission)."""
    return [*argv, *(w.replace("{checkpoint}", checkpoint) for w in resume)]


def resolve_command(
    argv: Sequence[str], *, run_dir: Path, args: Mapping[str, Any] | None = None
) -> list[str]:
    """Expand ``{python}`` and ``{run_dir}``, append ``args`` as flags, check the program."""
    words = [w.replace("{python}", sys.executable).replace("{run_dir}", str(run_dir)) for w in argv]
    words += args_to_flags(args or {})
    program = words[0]
    if "/" in program:
        if not Path(program).exists():
            raise SpecError(f"command: program {program!r} does not exist")
    elif shutil.which(program) is None:
        raise SpecError(f"command: program {program!r} not found on PATH")
    return words


# -- the job's environment and working directory ---------------------------------------


#: never handed to a job: a training script has no business with the Discord secrets
SECRET_ENV = ("HARNESS_DISCORD_TOKEN", "HARNESS_DISCORD_WEBHOOK_URL")


def run_env(run_dir: Path, run_id: str, extra: dict[str, str]) -> dict[str, str]:
    """The job's environment: ours without the secrets, the spec's ``env``, the protocol."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(extra)
    env.update(
        {
            "HARNESS_RUN_ID": run_id,
            "HARNESS_RUN_DIR": str(run_dir),
            "HARNESS_METRICS": str(run_dir / "metrics.jsonl"),
            "HARNESS_CONTROLS": str(run_dir / "controls.json"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def job_cwd(spec: RunSpec) -> Path:
    """Where the job runs: the spec's ``cwd``, else ours."""
    return Path(spec.cwd) if spec.cwd else Path.cwd()


def launch_env(spec: RunSpec, run_dir: Path, run_id: str) -> dict[str, str]:
    """The environment a launcher starts the job with (:func:`run_env`, and the sample
    interval the Slurm node agents read)."""
    env = run_env(run_dir, run_id, spec.env)
    env["HARNESS_SAMPLE_EVERY_S"] = f"{spec.watch.sample_every_s:g}"
    return env
