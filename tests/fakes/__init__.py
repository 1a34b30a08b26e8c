"""Fakes of external services, specified against the real ones."""
