"""The e2e fixtures (a real store, the supervisor on the test's loop, the reaper) for the
framework jobs; see tests/e2e/conftest.py."""

from tests.e2e.conftest import notes, reaper, settings, store, sup

__all__ = ["notes", "reaper", "settings", "store", "sup"]
