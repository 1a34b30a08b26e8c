"""A database the store cannot use is one line on stderr and exit 1, never a traceback:
a read-only one, a file of random bytes, a full disk. Run as real processes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.memory.mounts import read_only_state, tmpfs


def harness(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HARNESS_HOME": str(home)},
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert lines[0].startswith("harness: error: the ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_file_of_random_bytes_as_the_database(home: Path) -> None:
    home.mkdir(parents=True)
    home.chmod(0o700)  # else the first line is the warning that it was tightened
    db = home / "harness.db"
    db.write_bytes(random.Random(1).randbytes(8192))
    for argv in (["runs"], ["note", "add", "hello"], ["mistakes", "list", "--json"]):
        done = harness(home, *argv)
        assert_one_line(done, str(db), "is not a database (corrupt, or another kind of file")
        assert done.stdout == ""


def test_a_read_only_database(tmp_path: Path) -> None:
    with read_only_state(tmp_path) as home:
        done = harness(home, "note", "add", "one more")
        assert_one_line(done, str(home / "harness.db"), "is read-only")


@pytest.mark.parametrize("argv", [["note", "add", "x" * 3000], ["mistakes", "import", "{big}"]])
def test_a_full_disk(tmp_path: Path, argv: list[str]) -> None:
    big = tmp_path / "MISTAKES.md"
    entries = "".join(
        f"### M-{i:03d}: Entry {i}\n\n**Fix:** {'long text ' * 200}\n\n" for i in range(100, 400)
    )
    big.write_text(f"# Mistakes\n\n## Category: Data\n\n{entries}")
    with tmpfs(tmp_path / "fs", size="1m") as fs:
        home = fs / "state"
        assert harness(home, "notes").returncode == 0  # creates the database
        with (fs / "filler").open("wb", buffering=0) as filler, pytest.raises(OSError):
            while True:
                filler.write(b"\0" * 16384)
        done = harness(home, *[a.replace("{big}", str(big)) for a in argv])
        assert_one_line(done, str(home / "harness.db"), "is full")
