"""Arguments that are not UTF-8 (a shell passes bytes) are refused before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_non_utf8_argument_is_one_line_and_exit_2(home: Path) -> None:
    home.mkdir(parents=True)
    for argv in ([b"send", b"bad \xff"], [b"note", b"add", b"caf\xe9"], [b"status", b"\xfe"]):
        done = subprocess.run(
            [os.fsencode(sys.executable), b"-m", b"harness", *argv],
            capture_output=True,
            timeout=60,
            env={**os.environ, "HARNESS_HOME": str(home)},
        )
        err = done.stderr.decode()
        assert done.returncode == 2, err
        assert err.count("\n") == 1 and "is not valid UTF-8" in err, err
        assert "\\x" in err  # the bad byte is shown, escaped
    assert not (home / "harness.db").exists()  # nothing was stored, not even a database
