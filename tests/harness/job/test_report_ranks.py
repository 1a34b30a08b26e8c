"""The reporter under torchrun: rank 0 writes metrics.jsonl, every other rank its own file."""

from __future__ import annotations

import json
from pathlib import Path

from harness.job import Reporter


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HARNESS_METRICS": str(tmp_path / "metrics.jsonl"), **extra}


def test_each_rank_other_than_0_writes_its_own_file(tmp_path: Path) -> None:
    for rank in ("0", "1", "3"):
        with Reporter(environ=_env(tmp_path, RANK=rank, LOCAL_RANK=rank)) as rep:
            rep.step(5, samples_per_s=100.0 + int(rank))
    main = tmp_path / "metrics.jsonl"
    assert json.loads(main.read_text())["samples_per_s"] == 100.0
    for n in (1, 3):
        line = (tmp_path / f"metrics.rank{n}.jsonl").read_text()
        assert json.loads(line)["samples_per_s"] == 100.0 + n
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.jsonl",
        "metrics.rank1.jsonl",
        "metrics.rank3.jsonl",
    ]


def test_an_explicit_path_or_an_odd_rank_is_taken_as_given(tmp_path: Path) -> None:
    given = tmp_path / "mine.jsonl"
    with Reporter(given, environ=_env(tmp_path, RANK="2")) as rep:
        rep.step(1)
    assert given.exists() and not (tmp_path / "metrics.rank2.jsonl").exists()
    for odd in ("", "-1", "x", "١"):  # not a rank: the main file, as outside torchrun
        assert Reporter(environ=_env(tmp_path, RANK=odd)).metrics_path == tmp_path / "metrics.jsonl"
