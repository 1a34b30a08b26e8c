"""Exit codes, and the one place errors become them.

    0  success
    1  failure: a check failed, a thing was not found, the daemon is unreachable, a job
       could not be started, the store cannot be used
    2  bad usage or bad input: the command line, a spec, a config, a value

Every error is one line on stderr: ``harness: error: <what>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from harness.errors import HarnessError, InputError

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "exit_code", "run_handler"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


def exit_code(exc: BaseException) -> int | None:
    """The exit code for one of our errors (harness, memory, mistakes, sidecar), else None."""
    import memory
    import mistakes
    import sidecar

    if isinstance(exc, InputError):
        return EXIT_USAGE
    if isinstance(exc, HarnessError):
        return EXIT_FAILURE
    if isinstance(exc, mistakes.NotFoundError | memory.RunNotFoundError | memory.NoteNotFoundError):
        return EXIT_FAILURE
    if isinstance(
        exc, mistakes.MistakesError | sidecar.InvalidMessageError | memory.InvalidTextError
    ):
        return EXIT_USAGE  # a value the user gave (bad id, empty title, text not Unicode)
    if isinstance(exc, memory.StoreError | sidecar.SidecarError):
        return EXIT_FAILURE
    return None


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command; map our errors to one line on stderr and an exit code."""
    try:
        return handler(args)
    except BrokenPipeError:  # `harness ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        for problem in getattr(exc, "problems", ()):  # an import rejected: every problem
            print(f"{getattr(exc, 'source', '')}: {problem}", file=sys.stderr)
        print(f"harness: error: {exc}", file=sys.stderr)
        return code
