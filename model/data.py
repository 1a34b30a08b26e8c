"""Synthetic bit-stream tasks, cached on disk and checked against their rules.

A task is an endless byte stream cut into *positions* of 16 bytes (128 bits). The stream
is made of *groups* of ``group`` positions: the first ``free`` positions of a group are
uniformly random, the rest follow from them by the task's rule. A training sample is a
window of ``seq_len`` positions and its target is the same window shifted by one position,
so at window position ``i`` the model sees positions ``0..i`` and predicts position ``i+1``.

Why the ceilings are what they are (the general argument; each task's docstring fills in
the numbers). A transition *into* a random position (group phase ``j < free``) is
unpredictable: every bit is a coin flip, so the best bit accuracy there is 0.5. Every other
transition is fully determined by the previous ``order`` positions. If the window shows at
least ``order`` positions (``i + 1 >= order``) the rule gives the target exactly; the rule
is also the best guess when the transition happens to be random (any guess scores 0.5), so
the predictor "apply the rule" is optimal whatever the model knows about the group phase.
Window offsets are uniform, so each target is random with probability ``free / group``::

    acc(i) = 1 - free / (2 * group)     if i + 1 >= order
    acc(i) = 0.5                         otherwise (the rule's inputs are not visible)
    ceiling(seq_len) = mean over i = 0..seq_len-1 of acc(i)

Files: ``<data_dir>/<task>-<split>-seed<seed>.bin`` = magic, a JSON header (task, split,
seed, positions, group, sha256 of the payload), then the raw payload. They are written
atomically (temp file + rename) and :func:`verify_file` checks the header, the length,
the hash and, group by group, the rule itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "SPLITS",
    "TASKS",
    "DataError",
    "Task",
    "WindowSampler",
    "default_data_dir",
    "ensure_data",
    "file_path",
    "generate",
    "load_bits",
    "verify_file",
]

WIDTH = 16  # bytes per position: 128 bits
MAGIC = b"HBITS\x01"
SPLITS: dict[str, int] = {"train": 1 << 16, "val": 1 << 13}  # positions per split
_SPLIT_IDS = {"train": 0, "val": 1}  # held-out data comes from a different random stream


class DataError(Exception):
    """A data file is missing, truncated, corrupted or breaks its task's rule."""


# -- the rules ----------------------------------------------------------------------------
# Each ``expand`` takes the random positions of m groups, shape (m, free, 16) uint8, and
# returns the whole groups, shape (m, group, 16). The generator and the verifier both use it.


def _u128(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 16) big-endian bytes -> (hi, lo) uint64 halves."""
    halves = np.ascontiguousarray(x).view(">u8").astype(np.uint64)
    return halves[..., 0], halves[..., 1]


def _bytes128(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_u128`."""
    return np.stack([hi, lo], axis=-1).astype(">u8").view(np.uint8)


def _add128(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """128-bit addition mod 2**128 on uint64 halves (numpy wraps uint64 silently)."""
    lo = a[1] + b[1]
    carry = (lo < a[1]).astype(np.uint64)
    return a[0] + b[0] + carry, lo


def _expand_echo(free: np.ndarray) -> np.ndarray:
    """A random block repeated 8 times, then the next random block.

    7 of 8 transitions copy the current position; 1 of 8 is a fresh random block.
    Copying needs only the current position, so it is available even at window
    position 0, and it is optimal whether or not the window reveals the group phase
    (where the next position is random, every guess scores 0.5). With uniform window
    offsets each target is a new block with probability 1/8, at every window
    position: ceiling 7/8 * 1 + 1/8 * 0.5 = 0.9375 exactly, for any seq_len.
    min_seq_len 9 so that every window shows a change of block, i.e. the period.
    """
    return np.repeat(free, 8, axis=1)


def _expand_not(free: np.ndarray) -> np.ndarray:
    """A random block, then its bitwise complement, alternating for 8 positions.

    B, ~B, B, ~B, B, ~B, B, ~B, then a new random block. 7 of 8 transitions are
    "complement the current position", 1 of 8 is random: ceiling
    7/8 + 1/8 * 0.5 = 0.9375 at every window position.
    """
    flip = np.array([0x00, 0xFF] * 4, dtype=np.uint8)[None, :, None]  # odd phases inverted
    return np.repeat(free, 8, axis=1) ^ flip


def _expand_mirror(free: np.ndarray) -> np.ndarray:
    """A random block, then its bit reversal, alternating for 8 positions.

    B, rev(B), B, rev(B), ... where rev reverses the order of the 128 bits (bit k of
    the next position is bit 127-k of the current one); then a new random block.
    rev is its own inverse, so every in-group transition is "reverse the current
    position", which needs only the current position (available at window position 0)
    and does not depend on the group phase. 7 of 8 transitions follow it, 1 of 8 is
    random: ceiling 7/8 + 1/8 * 0.5 = 0.9375 at every window position, for any seq_len.
    Unlike ``not``, each output bit depends on a different input bit at the far end of
    the position, so the model must learn a permutation, not a per-bit flip.
    min_seq_len 9 so that every window shows a change of block, i.e. the period.
    """
    bits = np.unpackbits(free[:, 0], axis=-1)  # (m, 128), MSB of byte 0 first
    pair = np.stack([bits, bits[:, ::-1]], axis=1)  # (m, 2, 128): block, reversed
    return np.packbits(np.tile(pair, (1, 4, 1)), axis=-1)


def _expand_shift(free: np.ndarray) -> np.ndarray:
    """A random block rotated right by one bit per position, 16 rotations.

    15 of 16 transitions are "rotate the current position by one bit", 1 of 16 is
    a new random block: ceiling 15/16 + 1/16 * 0.5 = 0.96875 at every position.
    """
    bits = np.unpackbits(free[:, 0], axis=-1)  # (m, 128), MSB of byte 0 first
    # phase r is the block rotated right by r bits: bit k of phase r is bit k-r of phase 0
    src = (np.arange(128)[None, :] - np.arange(16)[:, None]) % 128  # (16, 128)
    return np.packbits(bits[:, src], axis=-1)


def _expand_count(free: np.ndarray) -> np.ndarray:
    """A 128-bit big-endian counter, +1 per position, random start every 64.

    Within a segment the next value is the current one plus one (mod 2**128),
    fully predictable from the current position alone, so a visible start is not
    needed. The only unpredictable transition is into a new segment's random
    start, 1 of 64: ceiling 63/64 + 1/64 * 0.5 = 0.9921875 at every position.
    """
    hi, lo = _u128(free[:, 0])
    k = np.arange(64, dtype=np.uint64)[None, :]
    zero = np.zeros_like(k)
    out_hi, out_lo = _add128((hi[:, None], lo[:, None]), (zero, k))
    return _bytes128(out_hi, out_lo)


def _expand_xor(free: np.ndarray) -> np.ndarray:
    """x[k] = x[k-1] XOR x[k-2] from two random blocks, new pair every 32.

    2 of 32 transitions land on a random block (0.5). The others need the two
    previous positions, which window position 0 does not have: given x[k] alone,
    x[k-1] is uniform and independent of it (the pair is a bijection of the two
    random blocks), so x[k] XOR x[k-1] is uniform and position 0 scores 0.5.
    ceiling(S) = (0.5 + (S-1) * (1 - 2/64)) / S, e.g. 0.95410 for S = 32.

    No preset ships for it: the default model does not learn the XOR on a CPU budget.
    The recurrence has period 3, so "copy the position two before the current one"
    matches the rule wherever all of it lies in one group; that shortcut scores only
    (1 + (S-2) * (1 - 3/64)) / S = 0.925 for S = 32 (window positions 0 and 1 blind, one
    more wrong transition per group), under 98 % of the ceiling (0.935). The XOR itself
    gives gradient descent no first-order signal (each input bit alone is uncorrelated
    with the target) and the shortcut takes most of the loss: measured at batch 256, the
    model reaches 0.889 by step 300 by copying, falls back to 0.86 by step 800, and
    window position 1 (where only the XOR helps) stays at 0.50; at lr 1e-3 the same
    (0.851 at step 600, 0.843 at 900, position 1 at 0.50). A variant without the
    shortcut (x[k-1] XOR rotated x[k-2]) stayed at 0.50 for 300 steps.
    """
    # x[k] = x[k-1] ^ x[k-2] has period 3: x0, x1, x0^x1, x0, x1, ...
    cycle = np.stack([free[:, 0], free[:, 1], free[:, 0] ^ free[:, 1]], axis=1)
    return np.tile(cycle, (1, 11, 1))[:, :32]


def _expand_fib(free: np.ndarray) -> np.ndarray:
    """x[k] = x[k-1] + x[k-2] mod 2**128 from two random blocks, new pair every 32.

    The same structure as ``xor`` with carries: x[k] + (uniform x[k-1]) is uniform,
    so window position 0 scores 0.5 and ceiling(S) = (0.5 + (S-1) * 31/32) / S.
    Far harder to learn than xor: each sum bit is the XOR of two input bits and a carry
    that depends on all the lower bits. At chance (0.50) after 400 steps; no preset.
    """
    prev, cur = _u128(free[:, 0]), _u128(free[:, 1])
    out = [free[:, 0], free[:, 1]]
    for _ in range(30):
        prev, cur = cur, _add128(prev, cur)
        out.append(_bytes128(*cur))
    return np.stack(out, axis=1)


@dataclass(frozen=True)
class Task:
    """A rule over positions; see the module docstring for how the ceiling follows."""

    name: str
    group: int  # positions per group
    free: int  # random positions at the start of each group
    order: int  # previous positions the rule needs to give the next one
    min_seq_len: int  # shortest window in which the whole pattern is visible
    expand: Callable[[np.ndarray], np.ndarray]  # its docstring derives the ceiling

    def ceiling(self, seq_len: int) -> float:
        """Best achievable average bit accuracy over all positions of a window."""
        predictable = 1.0 - self.free / (2 * self.group)
        accs = [predictable if i + 1 >= self.order else 0.5 for i in range(seq_len)]
        return sum(accs) / seq_len


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("echo", group=8, free=1, order=1, min_seq_len=9, expand=_expand_echo),
        Task("not", group=8, free=1, order=1, min_seq_len=9, expand=_expand_not),
        Task("mirror", group=8, free=1, order=1, min_seq_len=9, expand=_expand_mirror),
        Task("shift", group=16, free=1, order=1, min_seq_len=17, expand=_expand_shift),
        Task("count", group=64, free=1, order=1, min_seq_len=2, expand=_expand_count),
        Task("xor", group=32, free=2, order=2, min_seq_len=4, expand=_expand_xor),
        Task("fib", group=32, free=2, order=2, min_seq_len=4, expand=_expand_fib),
    ]
}


# -- files --------------------------------------------------------------------------------


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """HARNESS_DATA_DIR, else $XDG_CACHE_HOME/harness/data, else ~/.cache/harness/data."""
    if environ.get("HARNESS_DATA_DIR"):
        return Path(environ["HARNESS_DATA_DIR"])
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "harness" / "data"


def file_path(data_dir: Path, task: str, split: str, seed: int) -> Path:
    return Path(data_dir) / f"{task}-{split}-seed{seed}.bin"


def generate(task: str, split: str, seed: int, positions: int | None = None) -> np.ndarray:
    """The stream for (task, split, seed) as (positions, 16) uint8; deterministic."""
    t = TASKS[task]
    n = SPLITS[split] if positions is None else positions
    # A different seed sequence per task and split: held-out data shares no random block.
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], zlib.crc32(task.encode())])
    groups = math.ceil(n / t.group)
    free = rng.integers(0, 256, size=(groups, t.free, WIDTH), dtype=np.uint8)
    return np.ascontiguousarray(t.expand(free).reshape(-1, WIDTH)[:n])


def _header(task: str, split: str, seed: int, payload: bytes) -> bytes:
    meta = {
        "task": task,
        "split": split,
        "seed": seed,
        "positions": len(payload) // WIDTH,
        "group": TASKS[task].group,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    text = json.dumps(meta, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(text)) + text


def _write_atomic(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> tuple[dict[str, object], np.ndarray]:
    """Header and payload of a data file, checking everything but the rule."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise DataError(f"{path}: not a task data file (bad magic)")
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        meta = json.loads(blob[start : start + hlen])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: header is not valid JSON") from None
    payload = blob[start + hlen :]
    if len(payload) != meta.get("positions", -1) * WIDTH:
        raise DataError(
            f"{path}: truncated: {len(payload)} payload bytes, header says "
            f"{meta.get('positions')} positions of {WIDTH}"
        )
    if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        raise DataError(f"{path}: sha256 of the payload does not match the header")
    data = np.frombuffer(payload, dtype=np.uint8).reshape(-1, WIDTH)
    return meta, data


def verify_file(path: Path, task: str | None = None) -> np.ndarray:
    """Check header, length, hash and the task's rule; return the data or raise DataError."""
    meta, data = _read(Path(path))
    name = str(meta.get("task"))
    if task is not None and name != task:
        raise DataError(f"{path}: holds task {name!r}, expected {task!r}")
    if name not in TASKS:
        raise DataError(f"{path}: unknown task {name!r}")
    t = TASKS[name]
    whole = len(data) // t.group * t.group  # a trailing partial group is checked below
    groups = data[:whole].reshape(-1, t.group, WIDTH)
    expected = t.expand(groups[:, : t.free])
    bad = np.nonzero((expected != groups).any(axis=2).reshape(-1))[0]
    if whole < len(data):
        tail = data[whole:]
        tail_expected = t.expand(tail[None, : t.free].copy())[0, : len(tail)]
        tail_bad = np.nonzero((tail_expected != tail).any(axis=1))[0] + whole
        bad = np.concatenate([bad, tail_bad])
    if len(bad):
        raise DataError(
            f"{path}: {len(bad)} positions break the {name} rule (first at position {bad[0]})"
        )
    return data


def ensure_data(data_dir: Path, task: str, split: str, seed: int) -> tuple[Path, bool]:
    """Generate the file when missing; return (path, generated). Does not verify."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    path = file_path(data_dir, task, split, seed)
    if path.exists():
        return path, False
    payload = generate(task, split, seed).tobytes()
    _write_atomic(path, _header(task, split, seed, payload) + payload)
    return path, True


def load_bits(data_dir: Path, task: str, split: str, seed: int) -> np.ndarray:
    """Generate if missing, verify, and return the stream as (positions, 128) uint8 bits."""
    path, _ = ensure_data(data_dir, task, split, seed)
    return np.unpackbits(verify_file(path, task), axis=1)


# -- sampling -----------------------------------------------------------------------------


class WindowSampler:
    """Random training windows from one or more tasks' streams, drawn on the device.

    The streams are concatenated into one tensor so that a batch from any mix of tasks is
    a single gather: no Python loop per sample, nothing copied from the host per step.
    Its random generator is the whole sampler state, so a checkpoint can resume it exactly.
    """

    def __init__(self, seq_len: int, device: torch.device, seed: int) -> None:
        self.seq_len = seq_len
        self.device = device
        self.streams: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self._window = torch.arange(seq_len + 1, device=device)  # input + one shifted target

    def add(self, task: str, bits: np.ndarray) -> None:
        if len(bits) <= self.seq_len + 1:
            raise DataError(f"{task}: {len(bits)} positions cannot hold a window of {self.seq_len}")
        self.streams[task] = torch.from_numpy(bits).to(self.device)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        missing = set(weights) - set(self.streams)
        if missing or not weights:
            raise ValueError(f"no stream loaded for {sorted(missing) or 'an empty mix'}")
        self.weights = dict(weights)
        names = list(self.weights)
        lens = torch.tensor([len(self.streams[n]) for n in names], device=self.device)
        self._data = torch.cat([self.streams[n] for n in names])
        self._base = torch.cumsum(lens, 0) - lens
        self._span = (lens - self.seq_len).float()  # valid starts: 0 .. len - seq_len - 1
        w = torch.tensor([self.weights[n] for n in names], dtype=torch.float, device=self.device)
        self._p = w / w.sum()

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (size, seq_len, 128) float in {0, 1}."""
        which = torch.multinomial(self._p, size, replacement=True, generator=self.gen)
        u = torch.rand(size, generator=self.gen, device=self.device)
        starts = self._base[which] + (u * self._span[which]).long()
        w = self._data[starts[:, None] + self._window].float()
        return w[:, :-1], w[:, 1:]

    def state_dict(self) -> dict[str, object]:
        return {"gen": self.gen.get_state(), "weights": dict(self.weights)}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        gen = state["gen"]
        assert isinstance(gen, torch.Tensor)
        self.gen.set_state(gen)
