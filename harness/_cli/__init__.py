"""Command handlers, imported lazily by harness.cli."""
