"""The public face: what ``harness`` and its sub-packages export, and what importing them
costs. A training script imports ``harness.job`` and every job runs the wrapper: neither
may load the supervisor stack."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import harness

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["harness", "harness.job", "harness.core", "harness.runtime", "harness.daemon"]
HEAVY = ("psutil", "sqlmodel", "sqlalchemy", "aiohttp", "pydantic", "apscheduler", "httpx")


def test_the_public_face() -> None:
    assert sorted(harness.__all__) == [
        "Reporter",
        "RunSpec",
        "Supervisor",
        "__version__",
        "load_spec",
    ]
    from harness.core.spec import RunSpec
    from harness.job.report import Reporter
    from harness.runtime.specs import load_spec
    from harness.runtime.supervisor import Supervisor

    assert (harness.Reporter, harness.RunSpec, harness.load_spec, harness.Supervisor) == (
        Reporter,
        RunSpec,
        load_spec,
        Supervisor,
    )
    assert "Supervisor" in dir(harness) and "__version__" in dir(harness)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        harness.Nope  # noqa: B018
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["hatch"]["version"]["path"] == "harness/_version.py"
    assert harness.__version__.count(".") == 2


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    for export in module.__all__:
        assert getattr(module, export) is not None, f"{name}.{export}"


@pytest.mark.parametrize("module", ["harness.job", "harness.runtime.wrap", "harness.report"])
def test_the_job_side_stays_light(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"print([m for m in {HEAVY!r} + ('harness.runtime.supervisor', 'mistakes', 'memory') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_uses_only_public_names() -> None:
    """bench/ imports from harness only names a package exports in its ``__all__``."""
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
                assert node.module in PACKAGES, f"{path.name}: from {node.module} import ..."
                exported = importlib.import_module(node.module).__all__
                for alias in node.names:
                    assert alias.name in exported, f"{path.name}: {node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("harness."), f"{path.name}: {alias.name}"
