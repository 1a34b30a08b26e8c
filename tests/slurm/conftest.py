"""A real single-node Slurm cluster for the tests in this directory (``cluster.sh``).

The ``slurm_cluster`` fixture brings the cluster up once per session (installing Slurm
when it is missing) and takes it down at the end, unless ``HARNESS_KEEP_SLURM=1``. A
machine where Slurm cannot be installed or run (``cluster.sh`` exits 3: not root, no
apt-get) skips the tests; any other failure to come up fails them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_SH = Path(__file__).parent / "cluster.sh"
PARTITION = "debug"
CANNOT_RUN_HERE = 3  # cluster.sh's "Slurm cannot be installed or run on this machine"
UP_TIMEOUT_S = 300  # from nothing: apt-get install, then the daemons


@dataclass(frozen=True)
class SlurmCluster:
    node: str
    cpus: int
    partition: str


def cluster_sh(command: str, *, timeout: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run ``cluster.sh COMMAND``, stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        ["bash", str(CLUSTER_SH), command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def _node() -> SlurmCluster:
    out = subprocess.run(
        ["sinfo", "-h", "-p", PARTITION, "-o", "%n %c"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    return SlurmCluster(node=out[0], cpus=int(out[1]), partition=PARTITION)


@pytest.hookimpl(trylast=True)  # after -k/-m have deselected what will not run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test to use the cluster brings it up, maybe installing Slurm first:
    its setup gets the time for that, beyond the suite's 120 s per test."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here) and "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(UP_TIMEOUT_S + 120))
            return


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    try:
        up = cluster_sh("up", timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        tail = e.output if isinstance(e.output, str) else (e.output or b"").decode()
        pytest.fail(f"cluster.sh up took over {e.timeout} s:\n{tail[-2000:]}")
    lines = up.stdout.strip().splitlines() or ["(no output)"]
    if up.returncode == CANNOT_RUN_HERE:
        pytest.skip(lines[-1])
    if up.returncode != 0:
        pytest.fail(f"cluster.sh up exited {up.returncode}:\n" + "\n".join(lines[-30:]))
    try:
        yield _node()
    finally:
        if os.environ.get("HARNESS_KEEP_SLURM") != "1":
            cluster_sh("down", timeout=120)
