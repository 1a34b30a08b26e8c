"""The one error tree of ``harness``; the CLI maps it to exit codes in one place.

Every message is one line a person can act on, naming the file, key or thing at fault::

    HarnessError                 anything harness refuses or cannot do
     ├── InputError              bad input (exit 2)
     │    ├── UsageError         the command line itself
     │    ├── ConfigError        harness.toml or a HARNESS_* variable (names file and key)
     │    ├── SpecError          a run spec, preset or --set override (names file and key)
     │    ├── OverrideError      a chat override or live control outside its rules
     │    └── ControlsError      a live-controls change that cannot be applied
     ├── NotFoundError           no such run, preset or spec file (exit 1)
     ├── ConflictError           the thing is in a state that forbids it: aborting a finished run
     ├── LaunchError             a run could not be started (exit 1)
     │    ├── LaunchRefused      a pre-launch check failed (the run is recorded, with incidents)
     │    └── SpawnError         the job's process could not be started
     └── DaemonError             harness serve is unreachable or answered an error (exit 1)
          └── AlreadyRunningError  another harness serve holds this state dir

The packages below ``harness`` keep their own small trees (``memory.StoreError``,
``mistakes.MistakesError``, ``sidecar.SidecarError``); ``harness.cli.exits`` maps them
beside these. This module imports nothing, so every layer may use it.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRunningError",
    "ConfigError",
    "ConflictError",
    "ControlsError",
    "DaemonError",
    "HarnessError",
    "InputError",
    "LaunchError",
    "LaunchRefused",
    "NotFoundError",
    "OverrideError",
    "SpawnError",
    "SpecError",
    "UsageError",
]


class HarnessError(Exception):
    """Anything harness refuses or cannot do; the message is one line."""


class InputError(HarnessError, ValueError):
    """Input from a person or a file is wrong; nothing was changed."""


class UsageError(InputError):
    """The command line is wrong."""


class ConfigError(InputError):
    """A configuration value is wrong; the message names the file (or variable) and key."""


class SpecError(InputError):
    """A spec, preset or override is wrong; the message names the file and the key."""


class OverrideError(InputError):
    """A key or value from a person is not allowed; the message names it."""


class ControlsError(InputError):
    """A live-controls change is not usable; the message names the key."""


class NotFoundError(HarnessError, LookupError):
    """No such thing (run, preset); the message says what was asked for."""


class ConflictError(HarnessError):
    """The request is well formed but the thing's state forbids it (a finished run)."""


class LaunchError(HarnessError):
    """A run could not be started."""


class LaunchRefused(LaunchError):
    """A pre-launch check failed; the run is recorded as failed with incidents."""


class SpawnError(LaunchError):
    """The job's process could not be started (program or working directory missing...)."""


class DaemonError(HarnessError):
    """``harness serve`` is unreachable (``status`` 0) or answered with an HTTP error."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class AlreadyRunningError(DaemonError):
    """Another ``harness serve`` holds the lock for this state dir."""
