"""The run cgroups: parsing the kernel's files, refusing paths that are not a run's, and
the real thing (a process put in, listed, killed, the cgroup removed) where cgroup v2 is
writable here. Every test removes the cgroups and kills the processes it made."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.runtime import cgroups

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE = "27 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
ODD = r"50 22 0:40 /docker/ab /mnt/my\040cgroups rw - cgroup2 cgroup2 rw" + "\n"


def test_v2_mounts_finds_the_cgroup2_mount_only() -> None:
    assert cgroups.v2_mounts(HYBRID) == [(Path("/sys/fs/cgroup/unified"), "/")]
    assert cgroups.v2_mounts(PURE) == [(Path("/sys/fs/cgroup"), "/")]
    assert cgroups.v2_mounts(ODD) == [(Path("/mnt/my cgroups"), "/docker/ab")]
    assert cgroups.v2_mounts("garbage\n - \n") == []


def test_own_path_is_the_v2_line() -> None:
    text = "4:memory:/process_api/7f\n1:cpu:/\n0::/user.slice/session-2.scope\n"
    assert cgroups.own_path(text) == "/user.slice/session-2.scope"
    assert cgroups.own_path("4:memory:/x\n") is None  # v1 only
    assert cgroups.own_path("0::relative\n") is None


@pytest.mark.parametrize("run_id", ["", "a/b", "..", ".hidden", "two words", "x" * 300])
def test_a_run_id_unfit_as_a_directory_name_gets_no_cgroup(run_id: str) -> None:
    assert cgroups.name_for(run_id) is None
    assert cgroups.create(run_id) is None


def test_only_a_run_s_own_directory_counts_as_its_cgroup() -> None:
    mounts = cgroups.v2_mounts(HYBRID)
    good = Path("/sys/fs/cgroup/unified/harness/harness-r1")
    assert cgroups.is_run_cgroup(good, "r1", mounts)
    assert cgroups.is_run_cgroup(
        Path("/sys/fs/cgroup/unified/a/b/harness/harness-r1"), "r1", mounts
    )
    for bad, run_id in [
        (good, "r2"),  # another run's
        (Path("/sys/fs/cgroup/unified"), "r1"),  # the whole machine
        (Path("/sys/fs/cgroup/unified/system.slice/harness-r1"), "r1"),  # not under harness/
        (Path("/sys/fs/cgroup/cpu/harness/harness-r1"), "r1"),  # a v1 hierarchy
        (Path("/tmp/harness/harness-r1"), "r1"),  # no cgroup at all
        (Path("/sys/fs/cgroup/unified/harness/../harness/harness-r1"), "r1"),
        (Path("sys/fs/cgroup/unified/harness/harness-r1"), "r1"),  # relative
    ]:
        assert not cgroups.is_run_cgroup(bad, run_id, mounts), bad


def test_a_record_the_job_tampered_with_is_ignored(tmp_path: Path) -> None:
    own = cgroups.own_path(Path("/proc/self/cgroup").read_text()) or "/"
    mounts = cgroups.v2_mounts(Path("/proc/self/mountinfo").read_text())
    for text in [f"{point}{own}\n" for point, _ in mounts] + ["/etc\n", "\0\n", "x" * 5000]:
        (tmp_path / cgroups.RECORD_FILE).write_text(text)
        assert cgroups.read_record(tmp_path, "r1") is None, text
    (tmp_path / cgroups.RECORD_FILE).unlink()
    os.mkfifo(tmp_path / cgroups.RECORD_FILE)  # opening it for reading would block
    assert cgroups.read_record(tmp_path, "r1") is None


def test_without_a_cgroup_there_is_nothing_to_list_kill_or_remove(tmp_path: Path) -> None:
    missing = tmp_path / "harness" / "harness-r1"
    assert cgroups.members(missing) == []
    assert cgroups.kill(missing) is False
    assert cgroups.move(missing, os.getpid()) is False
    assert cgroups.remove(missing) is True


# -- the real thing ----------------------------------------------------------------------------


@pytest.fixture
def cgroup(tmp_path: Path) -> Iterator[Path]:
    """A fresh run cgroup below ours; skipped where cgroup v2 is not writable."""
    made = cgroups.create(f"test-{uuid.uuid4().hex[:12]}")
    if made is None:
        pytest.skip("no writable cgroup v2 here")
    try:
        yield made
    finally:
        cgroups.kill(made)
        cgroups.remove(made, timeout=5.0)


def test_a_process_that_enters_the_cgroup_is_listed_killed_and_the_cgroup_removed(
    cgroup: Path, tmp_path: Path
) -> None:
    # the child and the grandchild it forks at once are both in it: no race with the move
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    argv = cgroups.enter_argv(cgroup, [sys.executable, "-c", code])
    popen = subprocess.Popen(argv, start_new_session=True)
    try:
        assert cgroups.move(cgroup, popen.pid)  # idempotent: it is in already
        deadline = time.monotonic() + 15.0
        while len(cgroups.members(cgroup)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert popen.pid in cgroups.members(cgroup)
        assert len(cgroups.members(cgroup)) == 2
        assert os.getpid() not in cgroups.members(cgroup)
        assert cgroups.remove(cgroup) is False  # not while it holds processes

        assert cgroups.kill(cgroup)
        popen.wait(timeout=10)
        assert cgroups.remove(cgroup, timeout=5.0)
        assert not cgroup.exists()
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=10)


def test_the_record_names_the_cgroup_for_its_run_only(cgroup: Path, tmp_path: Path) -> None:
    run_id = cgroup.name.removeprefix(cgroups.PREFIX)
    assert cgroups.write_record(tmp_path, cgroup)

    assert cgroups.read_record(tmp_path, run_id) == cgroup
    assert cgroups.read_record(tmp_path, run_id + "x") is None
    assert cgroups.find(run_id) == cgroup
