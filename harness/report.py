"""Kept so that scripts written against ``harness.report`` keep working: use ``harness.job``."""

from harness.job import Reporter

__all__ = ["Reporter"]
