"""Files that readers see whole or not at all, and JSON that survives the trip.

Both sides of the job protocol use these: the supervisor writes ``controls.json`` and
the job reads it; the job's reporter writes metrics. Stdlib only.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["json_safe", "read_json", "read_text", "write_json_atomic", "write_text_atomic"]


def json_safe(value: Any) -> Any:
    """``value`` with NaN/Inf as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (JSON has none).

    Mappings and sequences are copied; numpy and torch scalars become Python numbers.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return json_safe(value.item())
    return value


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never half."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write ``data`` as a JSON object, atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")


def read_text(
    path: Path,
    *,
    kind: str,
    error: type[Exception],
    missing: type[Exception] | None = None,
) -> str:
    """The UTF-8 text of the regular file ``path`` (a spec, a config), else one line.

    ``error`` (or ``missing``, for a file that does not exist) is raised naming the path
    and the cause; a pipe, socket or device is refused before it is opened, since
    reading one could block for ever.
    """
    if path.exists() and not path.is_file() and not path.is_dir():
        raise error(f"{path}: not a regular file (a pipe, socket or device)")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise (missing or error)(f"{path}: no such {kind}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {kind}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object; raises ValueError naming the file when it is not one."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
