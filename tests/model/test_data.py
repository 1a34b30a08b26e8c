"""The task data: files pass their verifier, damage fails it, the ceilings are right."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from model.data import (
    MAGIC,
    SPLITS,
    TASKS,
    DataError,
    WindowSampler,
    _header,
    ensure_data,
    generate,
    load_bits,
    verify_file,
)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_generated_file_passes_its_verifier(tmp_path: Path, task: str) -> None:
    for split in SPLITS:
        path, generated = ensure_data(tmp_path, task, split, seed=3)
        assert generated
        data = verify_file(path, task)
        assert data.shape == (SPLITS[split], 16)
    # Held-out data is a different stream, not a copy of the training data.
    train = verify_file(ensure_data(tmp_path, task, "train", 3)[0])
    val = verify_file(ensure_data(tmp_path, task, "val", 3)[0])
    assert not np.array_equal(train[: len(val)], val)


def test_generation_is_deterministic_per_seed() -> None:
    assert np.array_equal(generate("shift", "val", 1), generate("shift", "val", 1))
    assert not np.array_equal(generate("shift", "val", 1), generate("shift", "val", 2))


def _flip(path: Path, offset_from_end: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(blob))


def test_a_flipped_byte_fails_verification(tmp_path: Path) -> None:
    path, _ = ensure_data(tmp_path, "echo", "val", seed=0)
    _flip(path, 1000)
    with pytest.raises(DataError, match="sha256"):
        verify_file(path)


def test_a_truncated_file_fails_verification(tmp_path: Path) -> None:
    path, _ = ensure_data(tmp_path, "count", "val", seed=0)
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(DataError, match="truncated"):
        verify_file(path)


def test_a_file_that_breaks_the_rule_fails_even_with_a_matching_hash(tmp_path: Path) -> None:
    """The verifier checks the rule itself, not only that the bytes are the ones written."""
    data = generate("count", "val", 0).copy()
    data[100, 15] ^= 0x04  # one bit of one counter value
    payload = data.tobytes()
    path = tmp_path / "count-val-seed0.bin"
    path.write_bytes(_header("count", "val", 0, payload) + payload)
    with pytest.raises(DataError, match=r"break the count rule \(first at position 100\)"):
        verify_file(path)


def test_a_file_of_another_task_or_format_fails(tmp_path: Path) -> None:
    path, _ = ensure_data(tmp_path, "not", "val", seed=0)
    with pytest.raises(DataError, match="expected 'echo'"):
        verify_file(path, "echo")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a data file")
    with pytest.raises(DataError, match="bad magic"):
        verify_file(junk)
    header = json.dumps({"task": "echo"}).encode()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(MAGIC + struct.pack("<I", len(header)) + header)
    with pytest.raises(DataError, match="truncated"):
        verify_file(bad)


# -- the ceilings, checked by an oracle that knows each rule ----------------------------------
# The oracle is written independently of the generators: plain Python integers.


def _ints(data: np.ndarray) -> list[int]:
    return [int.from_bytes(row.tobytes(), "big") for row in data]


def _rotr(x: int) -> int:
    return (x >> 1) | ((x & 1) << 127)


def _reverse(x: int) -> int:
    return int(f"{x:0128b}"[::-1], 2)


M = (1 << 128) - 1
ORACLE = {  # next position from (previous, current); previous is None at window position 0
    "echo": lambda prev, cur: cur,
    "not": lambda prev, cur: cur ^ M,
    "mirror": lambda prev, cur: _reverse(cur),
    "shift": lambda prev, cur: _rotr(cur),
    "count": lambda prev, cur: (cur + 1) & M,
    "xor": lambda prev, cur: cur if prev is None else prev ^ cur,
    "fib": lambda prev, cur: cur if prev is None else (prev + cur) & M,
}


def _bit_acc(pred: int, target: int) -> float:
    return 1.0 - bin(pred ^ target).count("1") / 128


@pytest.mark.parametrize("task", sorted(TASKS))
def test_an_oracle_predictor_scores_the_stated_ceiling(task: str) -> None:
    seq_len = 16
    stream = _ints(generate(task, "val", 5))
    # Every window offset in the stream, every position of the window: at window position
    # i the oracle sees only positions 0..i, so position 0 has no previous position.
    rule = ORACLE[task]
    first = [_bit_acc(rule(None, stream[p]), stream[p + 1]) for p in range(len(stream) - 1)]
    later = [
        _bit_acc(rule(stream[p - 1], stream[p]), stream[p + 1]) for p in range(1, len(stream) - 1)
    ]
    per_pos = [np.mean(first)] + [np.mean(later)] * (seq_len - 1)
    measured = float(np.mean(per_pos))
    assert measured == pytest.approx(TASKS[task].ceiling(seq_len), abs=0.01)


def test_the_ceiling_counts_the_blind_first_position() -> None:
    """xor needs two positions: window position 0 is a coin flip, and it shows in the ceiling."""
    xor = TASKS["xor"]
    assert xor.ceiling(1) == 0.5
    assert xor.ceiling(16) == pytest.approx((0.5 + 15 * (1 - 2 / 64)) / 16)
    assert TASKS["echo"].ceiling(32) == 0.9375
    assert TASKS["shift"].ceiling(32) == 0.96875


# -- sampling -------------------------------------------------------------------------------


def test_windows_are_contiguous_and_the_target_is_shifted_by_one(tmp_path: Path) -> None:
    sampler = WindowSampler(seq_len=12, device=torch.device("cpu"), seed=0)
    sampler.add("count", load_bits(tmp_path, "count", "train", 0))
    sampler.set_weights({"count": 1.0})
    x, y = sampler.batch(8)
    assert x.shape == y.shape == (8, 12, 128)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_a_mix_of_tasks_draws_from_each_by_weight(tmp_path: Path) -> None:
    sampler = WindowSampler(seq_len=16, device=torch.device("cpu"), seed=0)
    for task in ("echo", "not"):
        sampler.add(task, load_bits(tmp_path, task, "train", 0))
    sampler.set_weights({"echo": 3.0, "not": 1.0})
    x, _ = sampler.batch(2000)
    # An echo window repeats its first position several times; a not window never does.
    repeats = (x[:, 1:] == x[:, :-1]).all(dim=2).any(dim=1)
    assert repeats.float().mean().item() == pytest.approx(0.75, abs=0.05)


def test_sampler_state_replays_the_same_batches(tmp_path: Path) -> None:
    sampler = WindowSampler(seq_len=16, device=torch.device("cpu"), seed=0)
    sampler.add("echo", load_bits(tmp_path, "echo", "train", 0))
    sampler.set_weights({"echo": 1.0})
    state = sampler.state_dict()
    first = sampler.batch(4)[0]
    sampler.load_state_dict(state)
    assert torch.equal(sampler.batch(4)[0], first)
