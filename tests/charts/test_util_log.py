"""The utilisation series the watch loop records: downsampled, bounded, never followed
through a link the job planted, and never raising."""

from __future__ import annotations

import json
from pathlib import Path

from harness.runtime.chart import UTIL_FILE, UtilLog


def test_samples_are_thinned_to_one_per_interval(tmp_path: Path) -> None:
    log = UtilLog(tmp_path / UTIL_FILE, every_s=10)
    written = [log.add(float(t), 0.5, {"0": 0.9, "1": None}) for t in range(0, 60)]
    assert sum(written) == 6
    lines = [json.loads(x) for x in (tmp_path / UTIL_FILE).read_text().splitlines()]
    assert [r["t"] for r in lines] == [0, 10, 20, 30, 40, 50]
    assert lines[0] == {"t": 0, "cpu": 0.5, "gpu": {"0": 0.9}}  # unknown values left out
    assert not log.add(100.0, None, {})  # nothing measured: no point


def test_the_file_stays_bounded_over_a_long_run(tmp_path: Path) -> None:
    log = UtilLog(tmp_path / UTIL_FILE, every_s=1, max_lines=100)
    for t in range(5000):
        log.add(float(t), t / 5000, {})
    lines = [json.loads(x) for x in (tmp_path / UTIL_FILE).read_text().splitlines()]
    assert len(lines) <= 100
    assert lines[0]["t"] == 0 and lines[-1]["t"] >= 4900  # still spans the whole run
    again = UtilLog(tmp_path / UTIL_FILE, every_s=1, max_lines=100)  # a re-adopted run
    for t in range(5000, 5300):
        again.add(float(t), 0.5, {})
    assert len((tmp_path / UTIL_FILE).read_text().splitlines()) <= 100


def test_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / UTIL_FILE).symlink_to(victim)
    log = UtilLog(tmp_path / UTIL_FILE)
    assert log.add(1.0, 0.5, {}) is False and log.broken
    assert victim.read_text() == "keep me\n"
