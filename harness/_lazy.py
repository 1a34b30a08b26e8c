"""Lazy re-exports for package ``__init__`` files (PEP 562).

A training script imports ``harness.job`` and the job wrapper runs as
``harness.runtime.wrap``; neither may pay for importing the supervisor, SQLModel or
aiohttp. So a package's ``__init__`` names its exports and where they live, and each is
imported on first use. The ``TYPE_CHECKING`` imports beside each map keep mypy and the
import-linter contracts seeing the real arrows.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: name -> module (relative to it)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*names, *importlib.import_module(package).__dict__})

    return __getattr__, __dir__
