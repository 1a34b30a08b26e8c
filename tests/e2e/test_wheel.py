"""The wheel works installed, not only editable: built from this tree, installed into a
folder of its own, run from a directory that is not the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "harness/cli/data/MISTAKES.example.md" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    site = out / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)
    return site


def _run(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "HARNESS_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_installed_wheel_runs_the_tour_with_its_packaged_example(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(installed, tmp_path, "--version")
    assert where.returncode == 0 and where.stdout.startswith("harness ")
    locate = subprocess.run(
        [sys.executable, "-c", "import harness; print(harness.__file__)"],
        env={**os.environ, "PYTHONPATH": str(installed)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert locate.stdout.strip().startswith(str(installed))  # not the checkout
    tour = _run(installed, tmp_path, "tour")
    assert tour.returncode == 0, tour.stdout + tour.stderr
    assert "import a team's MISTAKES.md" in tour.stdout
    assert "imported " in tour.stdout and " added" in tour.stdout
    presets = _run(installed, tmp_path, "presets")
    assert presets.returncode == 0 and "echo" in presets.stdout and "cpu-burn" in presets.stdout
