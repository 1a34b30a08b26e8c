"""Device resolution, in its order: the spec, the start event, NVML attribution, the grace."""

from __future__ import annotations

import pytest

from harness.core.devices import GpuReading, Resolver, parse_device


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("auto", None),
        ("", None),
        ("cpu", ("cpu", ())),
        ("mps", ("cpu", ())),
        ("cuda", ("cuda", ())),
        ("cuda:1", ("cuda", (1,))),
        ("cuda:3,1", ("cuda", (1, 3))),
        ("cuda:x", ("cuda", ())),
    ],
)
def test_parse_device(name: str, parsed: tuple[str, tuple[int, ...]] | None) -> None:
    assert parse_device(name) == parsed


def held(*indices: int, count: int = 4) -> list[GpuReading]:
    return [GpuReading(i, 0.9, 0.9, held=i in indices) for i in range(count)]


def auto() -> Resolver:
    return Resolver("auto", started_at=100.0, grace_s=10.0)


def test_the_spec_decides_when_it_names_a_device() -> None:
    r = Resolver("cuda:1", started_at=100.0, grace_s=10.0)
    assert r.shown == "cuda:1 (from the spec)"
    assert not r.on_start_event("cpu")
    assert r.on_readings(101.0, held(0))  # its GPU set grows, the decision stays
    assert r.shown == "cuda:0,1 (from the spec)"
    cpu = Resolver("cpu", started_at=100.0, grace_s=10.0)
    assert not cpu.on_readings(101.0, held(0))
    assert cpu.shown == "cpu (from the spec)"


def test_auto_is_unresolved_until_something_decides() -> None:
    r = auto()
    assert (r.label, r.how, r.kind) == ("auto", "not resolved yet", None)
    assert not r.on_readings(101.0, held())  # no context anywhere
    assert not r.on_time(109.9)
    assert r.on_time(110.0)
    assert r.shown == "cpu (no GPU context after the grace period)"


def test_the_start_event_comes_first() -> None:
    r = auto()
    assert r.on_start_event("cuda")
    assert r.shown == "cuda (from the start event)"
    assert not r.on_readings(101.0, held())
    assert r.judged(101.0, held()) == tuple(held())  # nothing attributed: every GPU
    assert r.on_readings(102.0, held(2))
    assert r.shown == "cuda:2 (from the start event)"
    assert not r.on_start_event("cpu")  # the first start event decided


def test_attribution_resolves_and_grows_as_ranks_start() -> None:
    r = auto()
    assert r.on_readings(101.0, held(0))
    assert r.shown == "cuda:0 (attributed by NVML)"
    assert not r.on_readings(102.0, held(0))
    assert r.on_readings(103.0, held(0, 3))
    assert r.shown == "cuda:0,3 (attributed by NVML)"
    assert not r.on_time(200.0)  # decided: the grace period changes nothing
    # a GPU is judged from when it was first held
    assert [g.index for g in r.judged(102.0, held(0, 3))] == [0]
    assert [g.index for g in r.judged(103.0, held(0, 3))] == [0, 3]


def test_a_late_gpu_context_overrides_the_cpu_fallback() -> None:
    r = auto()
    assert r.on_time(110.0)
    assert r.kind == "cpu"
    assert r.on_readings(120.0, held(1))
    assert r.shown == "cuda:1 (attributed by NVML)"


def test_busy_prefers_sm_activity() -> None:
    assert GpuReading(0, 1.0, 0.2).busy == 0.2
    assert GpuReading(0, 1.0, 0.2).source == "sm_activity"
    assert GpuReading(0, 0.7, None).busy == 0.7
    assert GpuReading(0, 0.7, None).source == "util"
    assert GpuReading(0).busy is None and GpuReading(0).source == ""
