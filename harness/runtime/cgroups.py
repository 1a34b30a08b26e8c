"""One cgroup v2 per run, where the kernel lets us have one: the job cannot leave it.

A process can drop its environment (and so the run marker), leave its session and be
reparented to init, but it cannot leave its cgroup unless it writes itself elsewhere. So
where cgroup v2 is writable, every run's job lives in ``<our cgroup>/harness/harness-<run
id>``, and stopping the job means signalling every process in that directory (and finally
``cgroup.kill``). Where it is not (no cgroup2 mount, a read-only one, a directory we may
not write), every function here degrades to a value (None, False, []) and the launcher
falls back to sessions and recorded descendants (``harness.runtime.procs``).

Layout and rules:

- The mount comes from ``/proc/self/mountinfo`` (filesystem type ``cgroup2``: the whole
  ``/sys/fs/cgroup`` on a pure v2 system, ``/sys/fs/cgroup/unified`` on a hybrid one);
  our own cgroup is the ``0::<path>`` line of ``/proc/self/cgroup``.
- The runs go *below* our own cgroup, so whatever limits (memory, CPU) apply to the
  supervisor still apply to its jobs. The ``harness`` parent never holds a process and
  never enables a controller, so the "no internal processes" rule never bites: processes
  only ever go into the leaves.
- A process is put in its run's cgroup before it runs anything: :func:`enter_argv`
  prefixes the command with a ``/bin/sh`` one-liner that writes itself into
  ``cgroup.procs`` and then ``exec``s the command (same PID, same create time), so not
  even a fast first fork escapes. The launcher also writes the PID itself right after
  the spawn (:func:`move`) and falls back when that fails.
- Only a directory named ``harness-<run id>`` under a ``harness`` parent on a cgroup2
  mount is ever treated as a run's cgroup (:func:`is_run_cgroup`); a path recorded in an
  (untrusted) run dir that is anything else is ignored, so no file can make us kill a
  cgroup that is not a run's.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

__all__ = [
    "PARENT",
    "RECORD_FILE",
    "base_dir",
    "create",
    "enter_argv",
    "find",
    "is_run_cgroup",
    "kill",
    "members",
    "move",
    "name_for",
    "own_path",
    "read_record",
    "read_regular",
    "remove",
    "v2_mounts",
    "write_record",
]

PARENT = "harness"
PREFIX = "harness-"
RECORD_FILE = "cgroup"  # in the run dir: the absolute path of the run's cgroup
SHELL = "/bin/sh"
# "$0" is the cgroup directory; a failed write is silent and the command runs anyway.
_ENTER = '{ echo 0 > "$0/cgroup.procs"; } 2>/dev/null; exec "$@"'
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_POLL_S = 0.02


def _read(path: Path | str) -> str | None:
    """A kernel file (``/proc``, cgroupfs): trusted, small, never blocks."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_regular(path: Path, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of ``path`` when it is a regular file (not a link); else None.

    For files in a run dir, which the job may have replaced by a FIFO (opening it would
    block), a symlink out of the dir, or a huge file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


# -- where (pure) ----------------------------------------------------------------------


def v2_mounts(mountinfo: str) -> list[tuple[Path, str]]:
    """Every cgroup2 mount in a ``/proc/self/mountinfo`` text: (mount point, root in the fs)."""
    mounts = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, fstype = head.split(), tail.split()[:1]
        if sep and len(fields) >= 5 and fstype == ["cgroup2"]:
            mounts.append((Path(_unescape(fields[4])), _unescape(fields[3])))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def own_path(proc_cgroup: str) -> str | None:
    """The cgroup v2 path (``0::<path>``) in a ``/proc/<pid>/cgroup`` text, else None."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            path = line[3:].strip()
            return path if path.startswith("/") else None
    return None


def _dir_of(mounts: list[tuple[Path, str]], path: str) -> Path | None:
    """The directory of cgroup ``path`` under the first mount whose root holds it."""
    for point, root in mounts:
        rel = os.path.relpath(path, root)
        if rel == ".":
            return point
        if not rel.startswith(".."):
            return point / rel
    return None


def name_for(run_id: str) -> str | None:
    """The cgroup name of a run (``harness-<run id>``); None for an id unfit as a name."""
    return PREFIX + run_id if _RUN_ID.fullmatch(run_id) else None


def is_run_cgroup(path: Path, run_id: str, mounts: list[tuple[Path, str]]) -> bool:
    """Whether ``path`` can only be run ``run_id``'s cgroup: its name, its parent, its mount."""
    name = name_for(run_id)
    if name is None or not path.is_absolute() or ".." in path.parts or "\0" in str(path):
        return False
    if path.name != name or path.parent.name != PARENT:
        return False
    return any(path.is_relative_to(point) and path != point for point, _ in mounts)


# -- where (reading this machine) ------------------------------------------------------


def _mounts() -> list[tuple[Path, str]]:
    return v2_mounts(_read("/proc/self/mountinfo") or "")


def base_dir() -> Path | None:
    """``<our cgroup>/harness`` when it exists or may be created here; None otherwise.

    Only checks (write access to the directory it would go in); :func:`create` is what
    finds out for sure.
    """
    mounts = _mounts()
    own = own_path(_read("/proc/self/cgroup") or "")
    if not mounts or own is None:
        return None
    here = _dir_of(mounts, own)
    if here is None or not (here / "cgroup.procs").is_file():
        return None
    base = here / PARENT
    writable = base if base.is_dir() else here
    return base if os.access(writable, os.W_OK | os.X_OK) else None


def find(run_id: str, base: Path | None = None) -> Path | None:
    """The cgroup of ``run_id`` under ``base`` (default: :func:`base_dir`) if it exists."""
    name = name_for(run_id)
    base = base_dir() if base is None else base
    if name is None or base is None:
        return None
    path = base / name
    return path if (path / "cgroup.procs").is_file() else None


def create(run_id: str, base: Path | None = None) -> Path | None:
    """Make the run's cgroup (and the ``harness`` parent); None when the kernel says no."""
    name = name_for(run_id)
    base = base_dir() if base is None else base
    if name is None or base is None:
        return None
    path = base / name
    try:
        base.mkdir(exist_ok=True)
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    return path if (path / "cgroup.procs").is_file() else None


def enter_argv(cgroup: Path, argv: list[str]) -> list[str]:
    """``argv`` prefixed so that the process enters ``cgroup`` before it runs (same PID)."""
    if not os.access(SHELL, os.X_OK):
        return argv
    return [SHELL, "-c", _ENTER, str(cgroup), *argv]


def write_record(run_dir: Path, cgroup: Path) -> bool:
    """Note the run's cgroup in its run dir, for a re-adopting supervisor and the sweep.

    Written before the job starts, so the job has had no chance to plant a link there.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(run_dir / RECORD_FILE, flags, 0o600)
        try:
            os.write(fd, f"{cgroup}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def read_record(run_dir: Path, run_id: str) -> Path | None:
    """The cgroup noted in ``run_dir`` when it is run ``run_id``'s (see the module doc)."""
    data = read_regular(run_dir / RECORD_FILE, 4096)
    if not data:
        return None
    path = Path(data.decode("utf-8", errors="replace").strip())
    if not is_run_cgroup(path, run_id, _mounts()):
        return None
    return path if (path / "cgroup.procs").is_file() else None


# -- what is in it, and stopping it ----------------------------------------------------


def move(cgroup: Path, pid: int) -> bool:
    """Put process ``pid`` (and, from then on, its children) into ``cgroup``."""
    try:
        with open(cgroup / "cgroup.procs", "w", encoding="ascii") as f:
            f.write(str(pid))
    except OSError:
        return False
    return True


def members(cgroup: Path) -> list[int]:
    """PIDs of every process in ``cgroup`` and the cgroups below it; [] when it is gone."""
    pids: set[int] = set()
    for here, dirs, _ in os.walk(cgroup):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(here, d))]
        text = _read(os.path.join(here, "cgroup.procs")) or ""
        pids.update(int(word) for word in text.split() if word.isdigit())
    return sorted(pids)


def kill(cgroup: Path) -> bool:
    """SIGKILL everything in ``cgroup`` at once (``cgroup.kill``, Linux 5.14+); False if absent."""
    try:
        with open(cgroup / "cgroup.kill", "w", encoding="ascii") as f:
            f.write("1")
    except OSError:
        return False
    return True


def remove(cgroup: Path, *, timeout: float = 0.0) -> bool:
    """Remove ``cgroup`` and the cgroups below it once empty; True when it is gone.

    Killed processes leave their cgroup a moment after they die, so this retries for up
    to ``timeout`` seconds. A cgroup that still has processes stays.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            for here, _, _ in sorted(os.walk(cgroup), key=lambda w: -len(w[0])):
                os.rmdir(here)
        except FileNotFoundError:
            pass
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(_POLL_S)
                continue
        return not cgroup.exists()
