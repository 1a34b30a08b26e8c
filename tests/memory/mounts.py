"""Real filesystems for store fault tests: a tiny tmpfs, mounted read-write or read-only.

Mounting needs root (CAP_SYS_ADMIN); where it is not allowed the caller skips, since a
full disk or a read-only filesystem cannot be faked without one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=10)


@contextmanager
def tmpfs(where: Path, *, size: str = "1m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` at ``where`` for the block; pytest.skip if mount is refused."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def remount(where: Path, *, readonly: bool) -> None:
    """Make the tmpfs at ``where`` read-only (or writable again), for real."""
    done = _mount("-o", f"remount,{'ro' if readonly else 'rw'}", str(where))
    assert done.returncode == 0, done.stderr


@contextmanager
def read_only_state(tmp_path: Path) -> Iterator[Path]:
    """A state dir holding a database with one note, where writing is then refused.

    Root writes through any mode bits, so as root the state dir lives on a tmpfs that is
    remounted read-only; as another user its modes say read-only.
    """
    from memory import add_note, open_store

    root_ctx = tmpfs(tmp_path / "fs") if os.geteuid() == 0 else nullcontext(tmp_path)
    with root_ctx as root:
        home = root / "state"
        with open_store(home / "harness.db") as store, store.write() as s:
            add_note(session=s, text="written while it was writable")
        if os.geteuid() == 0:
            remount(root, readonly=True)
        else:
            (home / "harness.db").chmod(0o400)
            home.chmod(0o500)
        try:
            yield home
        finally:
            if os.geteuid() == 0:
                remount(root, readonly=False)
            else:
                home.chmod(0o700)
                (home / "harness.db").chmod(0o600)
