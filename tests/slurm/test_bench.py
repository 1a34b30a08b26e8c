"""``bench/slurm.py`` runs on the real single-node Slurm and prints its tables (tiny sizes:
a check that the benchmark works, not a measurement)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm.conftest import SlurmCluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one cluster
ROOT = Path(__file__).resolve().parents[2]


def test_the_slurm_benchmark_runs_and_reports_both_figures(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "slurm.py"), "--pairs", "1", "--latency", "1"]
    argv += ["--work-s", "0.5", "--tmp", str(tmp_path)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "### 1. Submit-to-running latency" in out and "| supervised | 1 |" in out
    assert "**Slurm throughput ratio (bare / supervised work time, median of 1):" in out
    assert "The node agent used a median" in out and "ms per sample" in out
