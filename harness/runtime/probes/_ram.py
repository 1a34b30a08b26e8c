"""How much memory the job can still take: the host's figure, tightened by cgroup limits.

A container or a systemd slice often has a memory limit far below the host's free RAM;
the kernel's OOM killer acts on whichever runs out first, so the headroom we report is
the smaller of the two.

cgroup v2: ``/proc/self/cgroup`` has a ``0::/path`` line; ``memory.max`` ("max" = no
limit) and ``memory.current`` live under ``/sys/fs/cgroup/<path>``. Any ancestor can hold
the limit that binds, so we walk up to the mount root and keep the tightest headroom.

cgroup v1 (and the memory controller of a hybrid host): the line whose controllers
include ``memory``; ``memory.limit_in_bytes`` (values near 2**63 mean unlimited) and
``memory.usage_in_bytes`` under ``/sys/fs/cgroup/memory/<path>``, walked up the same way.

Both versions count page cache in usage. Like the kubelet's "working set", we subtract
``inactive_file`` (v1: ``total_inactive_file``, which is hierarchical like usage) from
``memory.stat`` when that file is there, since the kernel reclaims it before it OOM-kills.

Nothing here raises on a missing or odd file: that level is skipped, and with no usable
cgroup figure the host figure stands.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

# cgroup v1 reports "unlimited" as PAGE_COUNTER_MAX * page size (about 2**63); anything
# this large is not a real limit.
_V1_UNLIMITED = 2**60


@dataclass(frozen=True)
class RamSample:
    """Memory headroom in bytes.

    ``available_bytes`` is what the rules use: the smaller of the host's available memory
    and the tightest cgroup headroom. ``total_bytes`` is the host's total, capped by the
    binding cgroup limit. The cgroup fields are None when no limit is set.
    """

    available_bytes: int
    host_available_bytes: int
    cgroup_available_bytes: int | None
    cgroup_limit_bytes: int | None
    total_bytes: int


def read_ram(*, root: Path = Path("/")) -> RamSample:
    """Read host and cgroup memory now. ``root`` lets tests supply a fake /proc and /sys."""
    vm = psutil.virtual_memory()
    host_available = int(vm.available)
    host_total = int(vm.total)
    limits = _cgroup_limits(root)
    if not limits:
        return RamSample(
            available_bytes=host_available,
            host_available_bytes=host_available,
            cgroup_available_bytes=None,
            cgroup_limit_bytes=None,
            total_bytes=host_total,
        )
    headroom, limit = min(limits)
    return RamSample(
        available_bytes=min(host_available, headroom),
        host_available_bytes=host_available,
        cgroup_available_bytes=headroom,
        cgroup_limit_bytes=limit,
        total_bytes=min(host_total, limit),
    )


def _cgroup_limits(root: Path) -> list[tuple[int, int]]:
    """(headroom, limit) for every limited cgroup level above this process, v2 and v1."""
    text = _read_text(root / "proc/self/cgroup")
    if text is None:
        return []
    v2_path: str | None = None
    v1_path: str | None = None
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hier_id, controllers, path = parts
        if hier_id == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    found: list[tuple[int, int]] = []
    mount = root / "sys/fs/cgroup"
    if v2_path is not None:
        for d in _levels(mount, v2_path):
            level = _level(d, "memory.max", "memory.current", "inactive_file")
            if level is not None:
                found.append(level)
    if v1_path is not None:
        for d in _levels(mount / "memory", v1_path):
            level = _level(
                d, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
            )
            if level is not None:
                found.append(level)
    return found


def _levels(mount: Path, path: str) -> Iterator[Path]:
    """The cgroup's directory and each ancestor up to the mount root.

    In a container without a cgroup namespace the path names the host's hierarchy while
    the mount shows only the container's own cgroup; then only the mount root is read.
    """
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    d = mount.joinpath(*parts)
    if not d.is_dir():
        yield mount
        return
    while True:
        yield d
        if d == mount:
            return
        d = d.parent


def _level(d: Path, limit_file: str, usage_file: str, inactive_key: str) -> tuple[int, int] | None:
    limit = _read_int(d / limit_file)
    if limit is None or limit >= _V1_UNLIMITED:
        return None
    usage = _read_int(d / usage_file)
    if usage is None:
        return None
    inactive = _stat_value(d / "memory.stat", inactive_key) or 0
    working_set = max(0, usage - inactive)
    return max(0, limit - working_set), limit


def _stat_value(path: Path, key: str) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == key:
            try:
                return int(fields[1])
            except ValueError:
                return None
    return None


def _read_int(path: Path) -> int | None:
    """An integer file; "max" and anything unparsable read as None (no limit)."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except (OSError, ValueError):
        return None
