"""MetricsTail: the supervisor's reader of metrics.jsonl, against what real jobs write."""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import stat
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core.values import as_float
from harness.job import Reporter
from harness.runtime.tail import MAX_DEPTH, MetricsTail, TailBatch


def line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@pytest.fixture
def metrics(tmp_path: Path) -> Path:
    return tmp_path / "metrics.jsonl"


def test_reads_what_the_job_reporter_writes(metrics: Path) -> None:
    with Reporter(metrics, environ={}, clock=lambda: 100.0) as rep:
        rep.start(total_steps=3, device="cpu")
        rep.step(0, loss=1.5, lr=0.01)
        rep.step(1, loss=float("nan"), grad_norm=float("inf"))
        rep.end(avg_bit_acc=0.94)
    tail = MetricsTail(metrics)

    batch = tail.read_new()

    assert [r.get("event") for r in batch.records] == ["start", None, None, "end"]
    assert batch.records[1] == {"step": 0, "loss": 1.5, "lr": 0.01, "t": 100.0}
    assert math.isnan(as_float(batch.records[2]["loss"]) or 0.0)
    assert as_float(batch.records[2]["grad_norm"]) == math.inf
    assert (batch.garbage, batch.oversized, batch.truncated) == (0, 0, False)
    assert tail.offset == metrics.stat().st_size
    assert tail.read_new() == TailBatch()


def test_half_written_line_is_completed_by_a_later_call(metrics: Path) -> None:
    full = line({"step": 1, "loss": 0.5})
    append(metrics, line({"step": 0}) + full[:7])
    tail = MetricsTail(metrics)

    first = tail.read_new()
    assert first.records == [{"step": 0}]
    assert first.garbage == 0
    assert tail.offset == len(line({"step": 0}))

    append(metrics, full[7:])
    second = tail.read_new()
    assert second.records == [{"step": 1, "loss": 0.5}]
    assert second.garbage == 0
    assert tail.offset == metrics.stat().st_size


def test_garbage_and_non_objects_are_counted_with_an_excerpt(metrics: Path) -> None:
    bad = b"Traceback (most recent call last): \x1b[31m" + b"x" * 500
    append(
        metrics,
        line({"step": 0})
        + bad
        + b"\n\n   \n"
        + b'[1, 2]\n42\n"text"\nnull\n{"step": 1,\n'
        + line({"step": 2}),
    )

    batch = MetricsTail(metrics).read_new()

    assert batch.records == [{"step": 0}, {"step": 2}]
    assert batch.garbage == 6  # blank lines are not garbage
    assert batch.first_garbage is not None
    assert batch.first_garbage.startswith("Traceback (most recent call last): \\x1b[31mxxx")
    assert len(batch.first_garbage) <= 120
    assert batch.first_garbage.isprintable()


def test_deeply_nested_json_is_garbage_not_a_crash(metrics: Path) -> None:
    append(metrics, b"[" * 200_000 + b"\n" + line({"step": 0}))

    batch = MetricsTail(metrics).read_new()

    assert batch.records == [{"step": 0}]
    assert batch.garbage == 1


def test_invalid_utf8_is_garbage(metrics: Path) -> None:
    append(metrics, b'{"note": "caf\xe9"}\n' + b"\xff\xfe\x00{\n" + line({"note": "café"}))

    batch = MetricsTail(metrics).read_new()

    assert batch.records == [{"note": "café"}]
    assert batch.garbage == 2
    assert batch.first_garbage == '{"note": "caf\\xe9"}'


def test_crlf_line_endings_are_tolerated(metrics: Path) -> None:
    append(metrics, b'{"step": 0}\r\n{"step": 1}\r\n\r\n{"step": 2}\r')
    tail = MetricsTail(metrics)

    assert tail.read_new().records == [{"step": 0}, {"step": 1}]
    append(metrics, b"\n")
    batch = tail.read_new()
    assert batch.records == [{"step": 2}]
    assert batch.garbage == 0


def test_five_megabyte_line_is_skipped_and_the_rest_is_read(metrics: Path) -> None:
    huge = b'{"blob": "' + b"a" * (5 << 20) + b'"}\n'
    append(metrics, line({"step": 0}) + huge + line({"step": 1}) + line({"step": 2}))
    tail = MetricsTail(metrics)

    tracemalloc.start()
    try:
        batch = tail.read_new()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert batch.records == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert batch.oversized == 1
    assert batch.garbage == 0
    assert peak < 3 << 20  # bounded by max_line_bytes + chunk_bytes, not by the 5 MB line
    assert tail.offset == metrics.stat().st_size


def test_huge_line_arriving_over_many_calls_is_counted_once(metrics: Path) -> None:
    append(metrics, line({"step": 0}) + b'{"blob": "')
    tail = MetricsTail(metrics)
    batches = [tail.read_new()]
    start_of_huge = len(line({"step": 0}))

    tracemalloc.start()
    try:
        for _ in range(5):
            append(metrics, b"b" * (1 << 20))
            batches.append(tail.read_new())
            assert tail.offset == start_of_huge  # nothing past the huge line consumed yet
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    append(metrics, b'"}\n' + line({"step": 1}) + b'{"step"')
    batches.append(tail.read_new())

    assert [r for b in batches for r in b.records] == [{"step": 0}, {"step": 1}]
    assert sum(b.oversized for b in batches) == 1
    assert sum(b.garbage for b in batches) == 0
    assert peak < 3 << 20
    append(metrics, b": 2}\n")
    assert tail.read_new().records == [{"step": 2}]


def test_line_just_over_a_small_limit_is_skipped(metrics: Path) -> None:
    ok = b'{"k": "' + b"x" * 10 + b'"}'  # 19 bytes
    too_long = b'{"k": "' + b"x" * 11 + b'"}'  # 20 bytes
    append(metrics, ok + b"\n" + too_long + b"\n" + ok + b"\n")

    batch = MetricsTail(metrics, max_line_bytes=19, chunk_bytes=3).read_new()

    assert batch.records == [{"k": "x" * 10}, {"k": "x" * 10}]
    assert batch.oversized == 1


def test_resume_from_saved_offset_returns_only_later_lines(metrics: Path) -> None:
    append(metrics, line({"step": 0}) + line({"step": 1}) + b'{"step": 2')
    saved = MetricsTail(metrics)
    saved.read_new()
    append(metrics, b"}\n" + line({"step": 3}))

    resumed = MetricsTail(metrics, offset=saved.offset)
    batch = resumed.read_new()

    assert batch.records == [{"step": 2}, {"step": 3}]
    assert not batch.truncated


def test_truncated_file_is_read_again_from_the_start(metrics: Path) -> None:
    append(metrics, line({"step": 0}) + line({"step": 1}) + line({"step": 2}))
    tail = MetricsTail(metrics)
    tail.read_new()

    metrics.write_bytes(line({"run": 2}))
    batch = tail.read_new()

    assert batch.truncated
    assert batch.records == [{"run": 2}]
    assert tail.offset == metrics.stat().st_size
    assert not tail.read_new().truncated


def test_file_rewritten_in_place_past_the_offset_is_read_again(metrics: Path) -> None:
    append(metrics, line({"a": 1}))
    tail = MetricsTail(metrics)
    tail.read_new()

    metrics.write_bytes(line({"step": 10, "loss": 2.0}) + line({"step": 11}))
    batch = tail.read_new()

    assert batch.truncated
    assert batch.records == [{"step": 10, "loss": 2.0}, {"step": 11}]


def test_replaced_file_is_read_from_the_start(metrics: Path) -> None:
    append(metrics, line({"old": 0}) + line({"old": 1}))
    tail = MetricsTail(metrics)
    tail.read_new()

    fresh = metrics.with_name("fresh.jsonl")
    fresh.write_bytes(line({"new": 0}) + line({"new": 1}) + line({"new": 2}))
    os.replace(fresh, metrics)
    batch = tail.read_new()

    assert batch.truncated
    assert batch.records == [{"new": 0}, {"new": 1}, {"new": 2}]


def test_resume_offset_beyond_the_end_restarts(metrics: Path) -> None:
    append(metrics, line({"step": 0}))

    batch = MetricsTail(metrics, offset=10_000).read_new()

    assert batch.truncated
    assert batch.records == [{"step": 0}]


def test_missing_file_gives_an_empty_batch_until_it_appears(metrics: Path) -> None:
    tail = MetricsTail(metrics)

    assert tail.read_new() == TailBatch()
    assert tail.offset == 0
    append(metrics, line({"step": 0}))
    assert tail.read_new().records == [{"step": 0}]

    metrics.unlink()
    gone = tail.read_new()
    assert gone.records == []
    assert tail.offset == 0
    append(metrics, line({"step": 0}))
    assert tail.read_new().records == [{"step": 0}]


def test_rejects_nonsense_arguments(metrics: Path) -> None:
    with pytest.raises(ValueError, match="offset"):
        MetricsTail(metrics, offset=-1)
    with pytest.raises(ValueError, match="max_line_bytes"):
        MetricsTail(metrics, max_line_bytes=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (0, 0.0),
        (-2.5, -2.5),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        (10**400, math.inf),
        (True, None),
        (False, None),
        ("1.5", None),
        ("loss", None),
        ("", None),
        (None, None),
        ([1.0], None),
        ({"v": 1}, None),
    ],
)
def test_as_float(value: Any, expected: float | None) -> None:
    assert as_float(value) == expected


@pytest.mark.parametrize("value", ["nan", "NaN", "NAN", float("nan")])
def test_as_float_nan(value: Any) -> None:
    result = as_float(value)
    assert result is not None
    assert math.isnan(result)


def test_bare_nan_written_by_plain_json_dumps_is_a_record(metrics: Path) -> None:
    append(metrics, (json.dumps({"loss": float("nan")}) + "\n").encode())

    (record,) = MetricsTail(metrics).read_new().records

    assert math.isnan(as_float(record["loss"]) or 0.0)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_records = st.dictionaries(
    st.text(max_size=8),
    st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(json_records, max_size=12),
    crlf=st.booleans(),
    ascii_only=st.booleans(),
    chunk_bytes=st.integers(1, 64),
    data=st.data(),
)
def test_any_split_of_a_valid_stream_yields_the_records_in_order(
    records: list[dict[str, Any]],
    crlf: bool,
    ascii_only: bool,
    chunk_bytes: int,
    data: st.DataObject,
) -> None:
    end = b"\r\n" if crlf else b"\n"
    stream = b"".join(json.dumps(r, ensure_ascii=ascii_only).encode() + end for r in records)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    reads_between = data.draw(st.lists(st.integers(0, 2), min_size=len(pieces)))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.jsonl"
        tail = MetricsTail(path, chunk_bytes=chunk_bytes)
        got: list[dict[str, Any]] = []
        for piece, reads in zip(pieces, reads_between, strict=False):
            append(path, piece)
            for _ in range(reads):
                batch = tail.read_new()
                assert (batch.garbage, batch.oversized, batch.truncated) == (0, 0, False)
                got.extend(batch.records)
                assert stream[: tail.offset].count(b"\n") == len(got)
        got.extend(tail.read_new().records)

    assert got == records
    assert tail.offset == len(stream)


# -- an untrusted file and run dir (issue 10) ------------------------------------------


def test_lone_surrogates_in_values_and_keys_are_replaced(metrics: Path) -> None:
    append(metrics, b'{"note": "a \\ud800 b", "\\udfffk": ["\\ud83d"], "ok": "\\ud83d\\ude00"}\n')

    (record,) = MetricsTail(metrics).read_new().records

    assert record == {"note": "a \ufffd b", "\ufffdk": ["\ufffd"], "ok": "\U0001f600"}
    json.dumps(record).encode("utf-8")  # every encoder accepts it now


def test_1e999_is_infinity_and_a_record(metrics: Path) -> None:
    append(metrics, b'{"step": 1, "loss": 1e999, "big": -1e999}\n')

    (record,) = MetricsTail(metrics).read_new().records

    assert record["loss"] == math.inf and record["big"] == -math.inf


def test_record_nested_past_max_depth_is_garbage(metrics: Path) -> None:
    ok = {"v": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))}
    too_deep = {"v": json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)}
    append(metrics, line(ok) + line(too_deep))

    batch = MetricsTail(metrics).read_new()

    assert batch.records == [ok]
    assert batch.garbage == 1


def test_fifo_is_never_opened_and_reported(metrics: Path) -> None:
    os.mkfifo(metrics)  # nobody writes it: a blocking open would hang this test
    tail = MetricsTail(metrics)

    batch = tail.read_new()

    assert batch == TailBatch(unreadable="a FIFO")


def test_socket_directory_and_device_are_reported(tmp_path: Path) -> None:
    sock_path = tmp_path / "sock" / "metrics.jsonl"
    sock_path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert MetricsTail(sock_path).read_new().unreadable == "a socket"
    folder = tmp_path / "dir" / "metrics.jsonl"
    folder.mkdir(parents=True)
    assert MetricsTail(folder).read_new().unreadable == "a directory"
    if os.geteuid() == 0:  # only root may make a device node
        dev = tmp_path / "dev" / "metrics.jsonl"
        dev.parent.mkdir()
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        assert MetricsTail(dev).read_new().unreadable == "a character device"


def test_symlink_is_not_followed_even_to_a_real_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(line({"step": 1, "leaked": True}))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").symlink_to(secret)

    batch = MetricsTail(run_dir / "metrics.jsonl").read_new()

    assert batch.records == []
    assert batch.unreadable == f"a symlink to {secret}"


def test_run_dir_swapped_for_a_symlink_elsewhere_is_outside(tmp_path: Path) -> None:
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    (elsewhere / "metrics.jsonl").write_bytes(line({"step": 1}))
    tail = MetricsTail(run_dir / "metrics.jsonl", root=run_dir)
    run_dir.rmdir()
    run_dir.symlink_to(elsewhere)

    batch = tail.read_new()

    assert batch.records == []
    assert batch.unreadable == (
        f"outside the run directory (its folder resolves to {elsewhere.resolve()})"
    )


def test_a_regular_file_back_in_place_is_read_from_its_start(metrics: Path) -> None:
    append(metrics, line({"step": 0}))
    tail = MetricsTail(metrics)
    assert tail.read_new().records == [{"step": 0}]
    metrics.unlink()
    os.mkfifo(metrics)
    assert tail.read_new() == TailBatch(truncated=True, unreadable="a FIFO")
    metrics.unlink()
    append(metrics, line({"step": 0}) + line({"step": 1}))

    assert tail.read_new() == TailBatch(records=[{"step": 0}, {"step": 1}])


def test_an_io_error_is_reported_not_raised(metrics: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(metrics, line({"step": 0}))
    real_pread = os.pread

    def failing_pread(fd: int, n: int, offset: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pread", failing_pread)
    tail = MetricsTail(metrics)
    assert tail.read_new() == TailBatch(unreadable="unreadable: Input/output error")
    monkeypatch.setattr(os, "pread", real_pread)
    assert tail.read_new().records == [{"step": 0}]
