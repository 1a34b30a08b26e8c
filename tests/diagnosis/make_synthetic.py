"""Generate the synthetic traces of the diagnosis corpus, deterministically.

    .venv/bin/python tests/diagnosis/make_synthetic.py

Writes ``corpus/syn_*.jsonl`` (removing stale ``syn_*`` files) and merges their labels
into ``corpus/labels.json``, leaving the real traces' labels alone. Every trace is seeded
from its own name, so the output is byte-for-byte the same on every run.

Each trace is a small function below: it builds a :class:`Sim` (a run's shape: steps,
logging interval, eval and checkpoint cadence, seconds per step) and fills its series on
the logged steps (loss, lr, grad_norm, samples_per_s, ...) and on the eval steps
(avg_bit_acc, val_loss, ...), then injects the fault. :meth:`Sim.render` turns that into
protocol lines: start, data/train phases, step lines, eval lines inside eval phases,
checkpoints inside checkpoint phases, controls events and the end, with ``t`` advancing
as the throughput says (a step line every ``log_every * batch / samples_per_s`` seconds).

Noise is multiplicative and log-normal, clipped at 3 sigma so that no healthy trace has
an accidental outlier; a fault is always far outside it (a loss spike is >= 3x the
local level, a gradient explosion >= 20x the median, a throughput drop >= 45 %).
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
LABELS = CORPUS / "labels.json"

Array = np.ndarray


# -- a run's shape and its rendering ------------------------------------------------------


@dataclass
class Sim:
    """One synthetic run: the grids, the series on them, and the events to interleave."""

    name: str
    steps: int
    log_every: int
    batch: int = 256
    eval_every: int = 0  # 0: no evals (a multiple of log_every otherwise)
    ckpt_every: int = 0
    eval_s: float = 3.0  # seconds an eval takes
    ckpt_s: float = 1.0
    data_s: float = 2.0  # seconds of the first data phase
    device: str = "cpu"
    t0: float = 0.0
    start_extra: dict[str, Any] = field(default_factory=dict)
    first_step: int = 0  # a resumed attempt starts after this step
    end: bool = True  # False: the file stops mid-run (a running or killed job)
    initial_controls: dict[str, Any] | None = None  # applied before the first step line
    stop_at: int = 0  # > 0: the file's last step line is the last logged step <= this

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        if not self.t0:
            crc = zlib.crc32(self.name.encode())
            self.t0 = 1_760_000_000.0 + crc % 5_000_000 + crc % 997 / 997
        s = np.arange(self.first_step + self.log_every, self.steps + 1, self.log_every)
        if s[-1] != self.steps:
            s = np.append(s, self.steps)
        if self.stop_at:
            s = s[s <= self.stop_at]
        self.s: Array = s
        self.n = len(s)
        self.x: Array = s / self.steps  # progress through the run, 0..1
        self.series: dict[str, Array] = {}
        ev = s[s % self.eval_every == 0] if self.eval_every else s[:0]
        self.es: Array = ev
        self.evals: dict[str, Array] = {}
        self.controls: dict[int, list[dict[str, Any]]] = {}  # applied after logged step k
        self.gaps: dict[int, float] = {}  # extra seconds before the line at step k
        self.eval_durations: dict[int, float] = {}
        self.ckpt_durations: dict[int, float] = {}
        self.data_pause: dict[int, float] = {}  # a data phase of this many s after step k

    # indices and noise

    def i(self, step: int) -> int:
        """Index of the first logged step >= step."""
        return int(np.searchsorted(self.s, step))

    def ei(self, step: int) -> int:
        return int(np.searchsorted(self.es, step))

    def noise(self, sigma: float, n: int | None = None) -> Array:
        """Multiplicative log-normal noise with median 1, clipped at 3 sigma."""
        z = np.clip(self.rng.standard_normal(self.n if n is None else n), -3.0, 3.0)
        return np.exp(sigma * z)

    def enoise(self, sd: float) -> Array:
        """Additive normal noise on the eval grid, clipped at 3 sd."""
        return sd * np.clip(self.rng.standard_normal(len(self.es)), -3.0, 3.0)

    # common shapes (on the logged grid unless said otherwise)

    def decay(
        self, l0: float, lf: float, tau: float, sigma: float, at: Array | None = None
    ) -> Array:
        """lf + (l0 - lf) * exp(-x / tau) with log-normal noise; x is progress 0..1."""
        x = self.x if at is None else at
        clean = lf + (l0 - lf) * np.exp(-x / tau)
        return clean * (self.noise(sigma, len(x)) if sigma else 1.0)

    def power(self, l0: float, lf: float, x0: float, alpha: float, sigma: float) -> Array:
        """lf + (l0 - lf) * (1 + x / x0) ** -alpha: the slow tail of language models."""
        return (lf + (l0 - lf) * (1 + self.x / x0) ** -alpha) * self.noise(sigma)

    def lr_warmup(
        self, peak: float, warm: int, schedule: str = "const", floor: float = 0.1
    ) -> Array:
        s = self.s.astype(float)
        ramp = np.minimum(1.0, s / max(1, warm))
        if schedule == "cosine":
            frac = np.clip((s - warm) / max(1, self.steps - warm), 0, 1)
            return peak * ramp * (floor + (1 - floor) * 0.5 * (1 + np.cos(math.pi * frac)))
        return peak * ramp

    def grad(self, g0: float, g1: float, sigma: float) -> Array:
        """Geometric drift from g0 to g1 with noise."""
        return g0 * (g1 / g0) ** self.x * self.noise(sigma)

    def throughput(self, base: float, sigma: float = 0.03, first_slow: float = 0.5) -> Array:
        out = base * self.noise(sigma)
        out[0] *= first_slow  # the first interval holds the warm-up (allocation, caches)
        return out

    def acc(self, a0: float, a1: float, tau: float, sd: float) -> Array:
        x = self.es / self.steps
        return np.clip(a1 - (a1 - a0) * np.exp(-x / tau) + self.enoise(sd), 0.0, 1.0)

    def basic(
        self,
        l0: float,
        lf: float,
        tau: float,
        sigma: float,
        lr: float,
        warm: int,
        schedule: str = "cosine",
        g: tuple[float, float, float] = (1.0, 0.4, 0.2),
        sps: float = 1000.0,
    ) -> None:
        """The usual four series: decaying loss, warmup + schedule lr, grad_norm, throughput."""
        self.series["loss"] = self.decay(l0, lf, tau, sigma)
        self.series["lr"] = self.lr_warmup(lr, warm, schedule)
        self.series["grad_norm"] = self.grad(*g)
        self.series["samples_per_s"] = self.throughput(sps)

    def control(self, after_step: int, **applied: Any) -> None:
        self.controls.setdefault(after_step, []).append(applied)

    # rendering

    def render(self) -> list[dict[str, Any]]:
        """The protocol lines; the same every time (a generator of its own)."""
        rng = np.random.default_rng([zlib.crc32(self.name.encode()), self.first_step, 1])
        evals = dict(self.evals)
        if self.eval_every and not evals and "loss" in self.series:
            # no eval series given: a val_loss that follows the smoothed train loss
            loss = self.series["loss"]
            idx = np.searchsorted(self.s, self.es)
            smooth = np.array([np.median(loss[max(0, k - 4) : k + 1]) for k in idx])
            z = np.clip(rng.standard_normal(len(idx)), -3.0, 3.0)
            evals["val_loss"] = 1.04 * smooth * np.exp(0.005 * z)
        out: list[dict[str, Any]] = []
        t = self.t0

        def emit(**fields: Any) -> None:
            fields["t"] = round(t, 3)
            out.append(fields)

        def jitter(sec: float) -> float:
            return sec * float(np.exp(0.05 * np.clip(rng.standard_normal(), -3, 3)))

        start = {"total_steps": self.steps, "device": self.device, **self.start_extra}
        if self.first_step:
            start["resumed_from"] = self.first_step
        emit(event="start", **start)
        emit(event="phase", phase="data")
        t += jitter(self.data_s)
        emit(event="phase", phase="train")
        if self.initial_controls is not None:
            t += 0.001
            emit(event="controls", applied=self.initial_controls)
        for after, applied_list in self.controls.items():
            if after <= self.first_step:
                for applied in applied_list:
                    emit(event="controls", applied=applied)
        prev = self.first_step
        tokens = self.start_extra.get("seq_len", 1)
        for k, step in enumerate(self.s.tolist()):
            rate = self.series.get("samples_per_s")
            if rate is None and "tokens_per_s" in self.series:
                rate = self.series["tokens_per_s"] / tokens
            per_step = self.batch / float(rate[k]) if rate is not None else 0.1
            t += jitter((step - prev) * per_step) + self.gaps.get(step, 0.0)
            line: dict[str, Any] = {"step": step}
            line.update({key: float(arr[k]) for key, arr in self.series.items()})
            emit(**line)
            if step in self.data_pause:
                emit(event="phase", phase="data")
                t += self.data_pause[step]
                emit(event="phase", phase="train")
            for applied in self.controls.get(step, []) if step > self.first_step else []:
                t += 0.01
                emit(event="controls", applied=applied)
            if self.eval_every and step % self.eval_every == 0 and step < self.steps:
                emit(event="phase", phase="eval")
                t += jitter(self.eval_durations.get(step, self.eval_s))
                self._eval_line(emit, step, evals)
                emit(event="phase", phase="train")
            if self.ckpt_every and step % self.ckpt_every == 0 and step < self.steps:
                emit(event="phase", phase="checkpoint")
                t += jitter(self.ckpt_durations.get(step, self.ckpt_s))
                emit(event="checkpoint", path=f"checkpoints/step-{step:07d}.pt", step=step)
                emit(event="phase", phase="train")
            prev = step
        if self.end:
            emit(event="phase", phase="checkpoint")
            t += jitter(self.ckpt_s)
            emit(event="checkpoint", path=f"checkpoints/step-{self.steps:07d}.pt", step=self.steps)
            final: dict[str, Any] = {}
            if self.eval_every:
                emit(event="phase", phase="eval")
                t += jitter(self.eval_durations.get(self.steps, self.eval_s))
                final = self._eval_line(emit, self.steps, evals)
            last = self.series.get("loss")
            if last is not None:
                final["loss"] = float(last[-1])
            emit(event="end", steps=self.steps, **final)
        return [_clean(o) for o in out]

    def _eval_line(
        self, emit: Callable[..., None], step: int, evals: dict[str, Array]
    ) -> dict[str, Any]:
        k = min(self.ei(step), len(self.es) - 1)
        metrics = {key: float(arr[k]) for key, arr in evals.items()}
        emit(step=step, **metrics)
        return metrics


def _clean(value: Any, key: str = "") -> Any:
    """Round floats to 6 significant digits (t to the millisecond); NaN/Inf as strings."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if key == "t":
            return round(value, 3)
        return float(f"{value:.6g}") if value else 0.0
    if isinstance(value, dict):
        return {k: _clean(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# -- the traces ---------------------------------------------------------------------------

Label = dict[str, Any]
Made = tuple[Sim | list[Sim], Label]  # one attempt, or several (a resumed run)
TRACES: dict[str, Callable[[], Made]] = {}


def trace(fn: Callable[[], Made]) -> Callable[[], Made]:
    TRACES[fn.__name__] = fn
    return fn


def label(
    symptoms: list[str],
    primary: str | None,
    onset: int | None,
    cause: str | None,
    note: str,
    tolerated: list[str] | None = None,
) -> Label:
    out: Label = {
        "healthy": not symptoms,
        "symptoms": symptoms,
        "primary": primary,
        "onset_step": onset,
        "cause": cause,
        "source": "synthetic",
        "note": note,
    }
    if tolerated:
        out["tolerated"] = tolerated
    return out


def healthy(note: str) -> Label:
    return label([], None, None, None, note)


def bit_task(sim: Sim, a0: float = 0.55, a1: float = 0.935, tau: float = 0.2) -> None:
    """Eval lines like the bundled trainer's: avg_bit_acc under a constant ceiling."""
    sim.evals["avg_bit_acc"] = np.minimum(sim.acc(a0, a1, tau, 0.002), 0.9375)
    sim.evals["ceiling"] = np.full(len(sim.es), 0.9375)


def ramp(sim: Sim, start: int, length: int, lo: float, hi: float) -> Array:
    """A factor that goes geometrically from lo to hi over ``length`` logged lines from
    ``start`` (a step) and stays at hi."""
    out = np.full(sim.n, lo)
    i = sim.i(start)
    j = min(sim.n, i + max(1, length))
    out[i:j] = lo * (hi / lo) ** (np.arange(1, j - i + 1) / max(1, length))
    out[j:] = hi
    return out


# nonfinite ------------------------------------------------------------------------------


@trace
def syn_nonfinite_after_lr_change() -> Made:
    sim = Sim("syn_nonfinite_after_lr_change", steps=5000, log_every=10, eval_every=500)
    sim.basic(2.3, 0.35, 0.25, 0.06, 3e-4, 200, "const", g=(1.2, 0.5, 0.15), sps=2400)
    sim.control(2000, lr=3e-3)
    i = sim.i(2030)
    sim.series["lr"][sim.i(2001) :] = 3e-3
    sim.series["grad_norm"][i : i + 3] *= np.array([8.0, 30.0, 120.0])
    sim.series["loss"][i : i + 3] *= np.array([1.3, 2.0, 4.0])
    sim.series["loss"][i + 3 :] = math.nan
    sim.series["grad_norm"][i + 3 :] = math.nan
    sim.evals["val_loss"] = sim.decay(2.4, 0.42, 0.25, 0.01, sim.es / sim.steps)
    sim.evals["val_loss"][sim.ei(2500) :] = math.nan
    return sim, label(
        ["nonfinite", "grad_explosion"],
        "nonfinite",
        int(sim.s[i + 3]),
        "lr_change",
        "lr x10 by controls at step 2000; grad_norm x30..x120 from 2030, then NaN loss and grad",
        ["divergence", "loss_spike"],
    )


@trace
def syn_nonfinite_single_inf() -> Made:
    sim = Sim("syn_nonfinite_single_inf", steps=1500, log_every=5, ckpt_every=500, batch=64)
    sim.basic(0.9, 0.08, 0.3, 0.08, 1e-3, 50, "cosine", g=(0.8, 0.3, 0.2), sps=700)
    i = sim.i(730)
    sim.series["loss"][i] = math.inf
    sim.series["grad_norm"][i] = math.inf
    return sim, label(
        ["nonfinite"],
        "nonfinite",
        730,
        "bad_batch",
        "one line with loss and grad_norm inf at step 730 (a bad sample), normal before and after",
        ["loss_spike", "grad_explosion"],
    )


@trace
def syn_nonfinite_lr_too_high() -> Made:
    sim = Sim("syn_nonfinite_lr_too_high", steps=1000, log_every=5, eval_every=100, batch=128)
    sim.basic(0.69, 0.3, 0.3, 0.05, 0.05, 100, "const", g=(0.5, 0.5, 0.15), sps=900)
    sim.initial_controls = {"lr": 0.05}
    # the grad norm creeps up from step 150 (the lr peaks at 100), then blows up before 600
    sim.series["grad_norm"] *= ramp(sim, 150, sim.i(540) - sim.i(150), 1.0, 3.0)
    j = sim.i(600)
    sim.series["grad_norm"][j - 5 : j] *= np.array([5.0, 12.0, 30.0, 80.0, 200.0])
    sim.series["loss"] *= ramp(sim, 300, sim.i(590) - sim.i(300), 1.0, 1.8)
    sim.series["loss"][j:] = math.nan
    sim.series["grad_norm"][j:] = math.nan
    bit_task(sim, 0.5, 0.8, 0.2)
    sim.evals["avg_bit_acc"][sim.ei(600) :] = 0.5
    return sim, label(
        ["nonfinite", "grad_explosion", "metric_collapse"],
        "nonfinite",
        600,
        "lr_too_high",
        "lr 0.05 from the start (no change): grad_norm creeps up from 150, x15..x600 at 575-595,"
        " NaN from 600; avg_bit_acc 0.77 -> 0.5 after",
        ["divergence", "degenerate_metric"],
    )


@trace
def syn_nonfinite_gradnorm_overflow() -> Made:
    sim = Sim("syn_nonfinite_gradnorm_overflow", steps=12000, log_every=50, device="cuda:0")
    sim.basic(4.2, 1.9, 0.2, 0.02, 6e-4, 500, "cosine", g=(2.0, 0.6, 0.2), sps=5200)
    for step in (6100, 6500, 7200, 7250, 9000):
        sim.series["grad_norm"][sim.i(step)] = math.nan
    return sim, label(
        ["nonfinite"],
        "nonfinite",
        6100,
        "unknown",
        "grad_norm NaN on 5 scattered lines from step 6100, the loss fine: no change before",
    )


@trace
def syn_nonfinite_from_start() -> Made:
    sim = Sim("syn_nonfinite_from_start", steps=400, log_every=1, batch=32)
    sim.basic(1.0, 1.0, 1.0, 0.0, 1e-3, 10, "const", sps=400)
    sim.series["loss"][:] = math.nan
    sim.series["grad_norm"][:] = math.nan
    return sim, label(
        ["nonfinite"],
        "nonfinite",
        int(sim.s[0]),
        "unknown",
        "loss and grad_norm NaN on every line from step 1 (a broken input or init), 400 steps",
    )


# loss_spike -----------------------------------------------------------------------------


@trace
def syn_loss_spike_bad_batch() -> Made:
    sim = Sim("syn_loss_spike_bad_batch", steps=8000, log_every=20, eval_every=400, ckpt_every=2000)
    sim.basic(3.0, 0.6, 0.25, 0.05, 1e-3, 400, "cosine", g=(1.5, 0.5, 0.15), sps=1800)
    i = sim.i(3400)
    sim.series["loss"][i] *= 5.0
    sim.series["grad_norm"][i] *= 3.0
    sim.evals["val_loss"] = sim.decay(3.0, 0.65, 0.25, 0.01, sim.es / sim.steps)
    return sim, label(
        ["loss_spike"],
        "loss_spike",
        3400,
        "bad_batch",
        "one line at step 3400 with loss x5 (grad x3), normal on the next: no change before it",
    )


@trace
def syn_loss_spike_bad_batch_small() -> Made:
    sim = Sim("syn_loss_spike_bad_batch_small", steps=600, log_every=1, batch=32)
    sim.basic(0.25, 0.012, 0.2, 0.1, 3e-4, 30, "cosine", g=(0.05, 0.01, 0.2), sps=3000)
    i = sim.i(415)
    sim.series["loss"][i] *= 8.0
    sim.series["grad_norm"][i] *= 25.0
    return sim, label(
        ["loss_spike", "grad_explosion"],
        "loss_spike",
        415,
        "bad_batch",
        "MSE-scale loss (0.01), logged every step: step 415 alone has loss x8 and grad_norm x25",
    )


@trace
def syn_loss_spike_lr_change_revert() -> Made:
    sim = Sim("syn_loss_spike_lr_change_revert", steps=3000, log_every=10, eval_every=250)
    sim.basic(1.4, 0.25, 0.3, 0.05, 5e-4, 100, "const", g=(0.6, 0.3, 0.15), sps=1500)
    sim.control(1200, lr=5e-3)
    sim.control(1300, lr=5e-4)
    lr = sim.series["lr"]
    lr[sim.i(1201) : sim.i(1301)] = 5e-3
    bump = np.ones(sim.n)
    i = sim.i(1230)
    bump[i : i + 8] = [1.6, 2.6, 3.5, 4.0, 3.8, 3.6, 3.4, 3.3]  # up while the lr is high
    bump[i + 8 : i + 18] = np.geomspace(3.0, 1.05, 10)  # down once it is reverted at 1300
    sim.series["loss"] *= bump
    sim.series["grad_norm"][i : i + 8] *= np.array([5, 20, 30, 25, 15, 10, 8, 6.0])
    bit_task(sim)
    sim.evals["avg_bit_acc"][sim.ei(1250)] -= 0.12
    return sim, label(
        ["loss_spike", "grad_explosion"],
        "loss_spike",
        1230,
        "lr_change",
        "lr x10 by controls at 1200 and back at 1300: loss up to x4 from 1230, back by ~1480",
        ["metric_collapse"],
    )


@trace
def syn_loss_spike_lr_change() -> Made:
    sim = Sim("syn_loss_spike_lr_change", steps=15000, log_every=50, device="cuda:0", batch=512)
    sim.basic(7.0, 2.6, 0.15, 0.02, 2e-4, 1000, "const", g=(1.0, 0.3, 0.1), sps=9000)
    sim.control(9000, lr=2e-3)
    sim.series["lr"][sim.i(9001) :] = 2e-3
    i = sim.i(9100)
    bump = np.ones(sim.n)
    bump[i : i + 20] = np.concatenate([[2.0, 3.2], np.geomspace(3.0, 1.02, 18)])
    sim.series["loss"] *= bump
    sim.series["grad_norm"][i : i + 4] *= np.array([3.0, 4.0, 2.5, 1.5])
    return sim, label(
        ["loss_spike"],
        "loss_spike",
        9100,
        "lr_change",
        "LM-scale loss (7 -> 2.6); lr x10 by controls at 9000: loss x3.2 at 9150, back by ~10100",
    )


@trace
def syn_loss_spike_data_change() -> Made:
    sim = Sim("syn_loss_spike_data_change", steps=6000, log_every=25, ckpt_every=1000, batch=128)
    sim.basic(1.1, 0.15, 0.2, 0.06, 1e-3, 250, "cosine", g=(0.7, 0.3, 0.15), sps=1300)
    sim.control(3000, data_weights={"mirror": 1.0, "echo": 1.0})
    sim.data_pause[3000] = 4.0
    i = sim.i(3025)
    bump = np.ones(sim.n)
    bump[i : i + 24] = np.concatenate([[3.5], np.geomspace(3.2, 1.03, 23)])
    sim.series["loss"] *= bump
    return sim, label(
        ["loss_spike"],
        "loss_spike",
        3025,
        "data_change",
        "data_weights -> echo+mirror at step 3000: loss x3.5 on the next line, back by ~3600",
    )


# divergence -----------------------------------------------------------------------------


@trace
def syn_divergence_lr_change() -> Made:
    sim = Sim("syn_divergence_lr_change", steps=10000, log_every=20, eval_every=1000, batch=512)
    sim.basic(6.9, 2.0, 0.2, 0.03, 3e-4, 500, "const", g=(1.0, 0.35, 0.15), sps=6000)
    sim.control(4000, lr=3e-3)
    sim.series["lr"][sim.i(4001) :] = 3e-3
    sim.series["loss"] *= ramp(sim, 4040, 25, 1.0, 1.75) * np.linspace(1, 1.05, sim.n)
    sim.series["grad_norm"] *= ramp(sim, 4040, 10, 1.0, 3.0)
    sim.evals["val_loss"] = sim.decay(6.9, 2.1, 0.2, 0.01, sim.es / sim.steps)
    sim.evals["val_loss"][sim.ei(5000) :] *= 1.8
    return sim, label(
        ["divergence"],
        "divergence",
        4040,
        "lr_change",
        "lr x10 by controls at 4000: loss climbs x1.75 from 4040 and stays up (grad x3 only)",
    )


@trace
def syn_divergence_lr_too_high() -> Made:
    sim = Sim("syn_divergence_lr_too_high", steps=2000, log_every=10, eval_every=200, batch=128)
    sim.basic(0.69, 0.3, 0.05, 0.05, 0.03, 200, "const", g=(0.4, 0.4, 0.2), sps=1100)
    sim.series["loss"] *= ramp(sim, 300, 60, 1.0, 1.7)
    sim.series["grad_norm"] *= ramp(sim, 300, 60, 1.0, 4.0)
    return sim, label(
        ["divergence"],
        "divergence",
        300,
        "lr_too_high",
        "lr 0.03 from the start, no change: loss 0.69 -> 0.31 by 300, then up to ~0.52 and stays",
    )


@trace
def syn_divergence_lr_change_exploding() -> Made:
    sim = Sim("syn_divergence_lr_change_exploding", steps=800, log_every=1, batch=64)
    sim.basic(0.08, 0.015, 0.25, 0.08, 1e-3, 40, "const", g=(0.2, 0.05, 0.2), sps=2500)
    sim.initial_controls = {"lr": 1e-3}
    sim.control(450, lr=2e-2)
    sim.series["lr"][sim.i(451) :] = 2e-2
    sim.series["loss"] *= ramp(sim, 455, 30, 1.0, 4.0)
    sim.series["grad_norm"] *= ramp(sim, 455, 10, 1.0, 30.0)
    return sim, label(
        ["divergence", "grad_explosion"],
        "divergence",
        455,
        "lr_change",
        "loss ~0.015, every step logged; lr x20 by controls at 450: loss x4, grad x30, stays",
    )


@trace
def syn_divergence_late_drift() -> Made:
    sim = Sim(
        "syn_divergence_late_drift", steps=20000, log_every=50, eval_every=2000, ckpt_every=5000
    )
    sim.basic(3.5, 1.2, 0.15, 0.03, 1e-3, 1000, "cosine", g=(1.0, 0.4, 0.15), sps=4000)
    sim.series["loss"] *= ramp(sim, 12000, sim.i(16000) - sim.i(12000), 1.0, 1.9)
    bit_task(sim, 0.6, 0.93, 0.15)
    return sim, label(
        ["divergence"],
        "divergence",
        12000,
        "unknown",
        "loss 3.5 -> 1.25 by step 12000, then drifts up to ~2.3 by 16000 and stays: no change",
    )


# no_progress ----------------------------------------------------------------------------


@trace
def syn_no_progress_flat() -> Made:
    sim = Sim("syn_no_progress_flat", steps=3000, log_every=10, eval_every=250, batch=128)
    sim.basic(0.6931, 0.6931, 1.0, 0.01, 3e-3, 100, "const", g=(0.03, 0.03, 0.2), sps=1200)
    sim.evals["avg_bit_acc"] = 0.5 + sim.enoise(0.003)
    sim.evals["ceiling"] = np.full(len(sim.es), 0.9375)
    return sim, label(
        ["no_progress"],
        "no_progress",
        int(sim.s[0]),
        "unknown",
        "bit task: loss 0.693 +- 1 % for all 3000 steps, accuracy at chance (noisy, not constant)",
    )


@trace
def syn_no_progress_tiny_lr() -> Made:
    sim = Sim("syn_no_progress_tiny_lr", steps=5000, log_every=25, batch=64)
    sim.basic(4.61, 4.58, 1.0, 0.015, 1e-8, 100, "const", g=(3.0, 2.8, 0.2), sps=800)
    return sim, label(
        ["no_progress"],
        "no_progress",
        int(sim.s[0]),
        "unknown",
        "100-class loss 4.61 -> 4.58 (< 1 %) over 5000 steps, lr 1e-8, grad_norm ~3 healthy",
    )


@trace
def syn_no_progress_regression() -> Made:
    sim = Sim("syn_no_progress_regression", steps=12000, log_every=25, eval_every=1000)
    sim.basic(10.3, 10.0, 0.5, 0.05, 1e-4, 500, "cosine", g=(8.0, 7.0, 0.25), sps=3000)
    sim.evals["val_loss"] = 10.2 * np.exp(sim.enoise(0.01))
    return sim, label(
        ["no_progress"],
        "no_progress",
        int(sim.s[0]),
        "unknown",
        "regression loss ~10 (10.3 -> 10.0, noise 5 %) over 12000 steps, val_loss flat ~10.2",
    )


@trace
def syn_no_progress_vanishing() -> Made:
    sim = Sim("syn_no_progress_vanishing", steps=1000, log_every=5, eval_every=100, batch=64)
    sim.basic(2.3026, 2.3026, 1.0, 0.005, 1e-3, 50, "const", sps=900)
    sim.series["grad_norm"] = np.concatenate([[0.4, 0.02, 1e-4], 1e-9 * sim.noise(0.3, sim.n - 3)])
    sim.evals["val_acc"] = 0.1 + sim.enoise(0.004)
    return sim, label(
        ["no_progress", "vanishing_gradient"],
        "no_progress",
        int(sim.s[0]),
        "unknown",
        "10-class loss 2.3026 flat for 1000 steps; grad_norm 0.4 -> 1e-9 by step 15 (dead net)",
    )


# grad_explosion -------------------------------------------------------------------------


@trace
def syn_grad_explosion_lr_change() -> Made:
    sim = Sim("syn_grad_explosion_lr_change", steps=4000, log_every=10, eval_every=500, batch=128)
    sim.basic(1.5, 0.3, 0.25, 0.05, 5e-4, 200, "cosine", g=(0.8, 0.4, 0.15), sps=1600)
    sim.control(2500, lr=5e-3)
    sim.series["lr"][sim.i(2501) :] *= 10
    i = sim.i(2520)
    g = np.ones(sim.n)
    g[i : i + 30] = np.concatenate([[6, 25, 40, 35, 30], np.geomspace(28, 12, 25)])
    g[i + 30 :] = 12.0
    sim.series["grad_norm"] *= g
    sim.series["loss"] *= ramp(sim, 2520, 5, 1.0, 1.15)
    return sim, label(
        ["grad_explosion"],
        "grad_explosion",
        2520,
        "lr_change",
        "lr x10 by controls at 2500: grad_norm x25..x40 from 2520, stays x12; loss only +15 %",
    )


@trace
def syn_grad_explosion_lr_too_high() -> Made:
    sim = Sim("syn_grad_explosion_lr_too_high", steps=2500, log_every=5, batch=64)
    sim.basic(2.0, 0.7, 0.3, 0.08, 0.02, 50, "const", g=(0.5, 0.5, 0.2), sps=700)
    g = sim.series["grad_norm"]
    for step in range(120, 2500, 90):  # bursts over and over once the lr has peaked
        k = sim.i(step + int(sim.rng.integers(0, 40)))
        g[k : k + 2] *= np.array([15.0, 30.0]) * float(sim.rng.uniform(0.9, 1.6))
    return sim, label(
        ["grad_explosion"],
        "grad_explosion",
        120,
        "lr_too_high",
        "lr 0.02 from the start, no change: grad_norm bursts x15..x45 every ~90 steps from 120",
    )


@trace
def syn_grad_explosion_bad_batch() -> Made:
    sim = Sim("syn_grad_explosion_bad_batch", steps=20000, log_every=40, ckpt_every=4000, batch=512)
    sim.basic(5.5, 2.2, 0.2, 0.02, 3e-4, 800, "cosine", g=(1.2, 0.3, 0.12), sps=8000)
    sim.series["grad_norm"][sim.i(13000)] *= 60.0
    return sim, label(
        ["grad_explosion"],
        "grad_explosion",
        13000,
        "bad_batch",
        "one line at step 13000 with grad_norm x60, loss unmoved, nothing before it: 20000 steps",
    )


@trace
def syn_grad_explosion_creeping() -> Made:
    sim = Sim("syn_grad_explosion_creeping", steps=6000, log_every=20, eval_every=600)
    sim.basic(0.9, 0.1, 0.25, 0.05, 1e-3, 300, "const", g=(0.3, 0.3, 0.12), sps=2000)
    sim.series["grad_norm"] *= ramp(sim, 3600, sim.i(5400) - sim.i(3600), 1.0, 30.0)
    bit_task(sim)
    return sim, label(
        ["grad_explosion"],
        "grad_explosion",
        4800,
        "unknown",
        "grad_norm creeps up x30 from step 3600 to 5400 (x10 about 4800), loss still falling",
    )


# vanishing_gradient ---------------------------------------------------------------------


@trace
def syn_vanishing_gradient_collapse() -> Made:
    sim = Sim(
        "syn_vanishing_gradient_collapse", steps=2000, log_every=10, eval_every=200, batch=128
    )
    sim.basic(2.3, 0.4, 0.35, 0.04, 1e-3, 100, "const", g=(0.5, 0.3, 0.15), sps=1000)
    i = sim.i(1300)
    sim.series["grad_norm"][i : i + 3] *= np.array([1e-2, 1e-5, 1e-7])
    sim.series["grad_norm"][i + 3 :] = 2e-9 * sim.noise(0.3, sim.n - i - 3)
    loss = sim.series["loss"]
    loss[i:] = float(np.median(loss[i - 10 : i])) * sim.noise(0.04, sim.n - i)
    sim.evals["val_acc"] = sim.acc(0.2, 0.85, 0.35, 0.004)
    k = sim.ei(1300)
    sim.evals["val_acc"][k:] = float(sim.evals["val_acc"][k - 1]) + sim.enoise(0.002)[k:]
    return sim, label(
        ["vanishing_gradient"],
        "vanishing_gradient",
        1300,
        "unknown",
        "grad_norm 0.4 -> 2e-9 within 3 lines at step 1300 of 2000; loss frozen at ~0.7 (was"
        " falling)",
    )


@trace
def syn_vanishing_gradient_dead_units() -> Made:
    sim = Sim("syn_vanishing_gradient_dead_units", steps=4000, log_every=20, batch=256)
    sim.basic(0.6931, 0.6931, 1.0, 0.01, 3e-3, 200, "const", sps=1500)
    # dying units: the norm decays geometrically to 1e-8 over 60 % of the run, then stays
    decay = np.minimum(1.0, sim.x / 0.6)
    sim.series["grad_norm"] = 0.8 * (1.25e-8) ** decay * sim.noise(0.1)
    return sim, label(
        ["vanishing_gradient", "no_progress"],
        "vanishing_gradient",
        1800,
        "unknown",
        "grad_norm decays geometrically 0.8 -> 1e-8 by step 2400, below 1e-6 from ~1800;"
        " loss 0.693 flat",
    )


@trace
def syn_vanishing_gradient_after_lr_change() -> Made:
    sim = Sim("syn_vanishing_gradient_after_lr_change", steps=3000, log_every=10, eval_every=300)
    sim.basic(1.2, 0.2, 0.3, 0.05, 1e-3, 100, "const", g=(0.6, 0.3, 0.15), sps=1400)
    sim.control(1800, lr=1e-2)
    sim.series["lr"][sim.i(1801) :] = 1e-2
    i = sim.i(1820)
    g = sim.series["grad_norm"]
    g[i : i + 4] *= np.array([3.0, 0.05, 1e-4, 1e-6])
    g[i + 4 :] = 5e-9 * sim.noise(0.3, sim.n - i - 4)
    loss = sim.series["loss"]
    loss[i:] = 0.69 * sim.noise(0.005, sim.n - i)
    return sim, label(
        ["vanishing_gradient", "divergence"],
        "vanishing_gradient",
        1830,
        "lr_change",
        "lr x10 by controls at 1800: the units die, grad_norm -> 5e-9 from 1830, loss jumps"
        " ~0.3 -> 0.69 and sits there",
        ["loss_spike"],
    )


@trace
def syn_vanishing_gradient_small_scale() -> Made:
    sim = Sim("syn_vanishing_gradient_small_scale", steps=16000, log_every=40, ckpt_every=4000)
    sim.basic(0.12, 0.01, 0.3, 0.06, 3e-4, 800, "cosine", g=(2e-3, 1e-3, 0.15), sps=5000)
    i = sim.i(10000)
    g = sim.series["grad_norm"]
    g[i:] = 4e-10 * sim.noise(0.3, sim.n - i)
    loss = sim.series["loss"]
    loss[i:] = float(np.median(loss[i - 8 : i])) * sim.noise(0.06, sim.n - i)
    return sim, label(
        ["vanishing_gradient"],
        "vanishing_gradient",
        10000,
        "unknown",
        "grad_norm ~1e-3 drops to 4e-10 at step 10000 of 16000; loss stuck (was falling)",
    )


# metric_collapse ------------------------------------------------------------------------


@trace
def syn_metric_collapse_data_change() -> Made:
    sim = Sim("syn_metric_collapse_data_change", steps=10000, log_every=50, eval_every=500)
    sim.basic(0.9, 0.2, 0.2, 0.04, 1e-3, 500, "cosine", g=(0.5, 0.3, 0.15), sps=2200)
    bit_task(sim, 0.55, 0.93, 0.15)
    sim.control(6000, data_weights={"not": 1.0})
    sim.series["loss"] *= ramp(sim, 6050, 4, 1.0, 1.1)
    k = sim.ei(6500)
    sim.evals["avg_bit_acc"][k:] = 0.55 + sim.enoise(0.01)[k:]
    return sim, label(
        ["metric_collapse"],
        "metric_collapse",
        6500,
        "data_change",
        "data_weights -> not at step 6000: avg_bit_acc 0.93 -> ~0.55 from the 6500 eval on",
    )


@trace
def syn_metric_collapse_data_change_spike() -> Made:
    sim = Sim("syn_metric_collapse_data_change_spike", steps=600, log_every=5, eval_every=25)
    sim.basic(0.69, 0.2, 0.25, 0.04, 3e-3, 20, "const", g=(0.06, 0.02, 0.2), sps=800)
    sim.initial_controls = {"lr": 3e-3}
    bit_task(sim, 0.75, 0.935, 0.1)
    sim.control(300, data_weights={"mirror": 1.0})
    sim.data_pause[300] = 0.5
    i = sim.i(305)
    bump = np.ones(sim.n)
    bump[i : i + 30] = np.concatenate([[3.0, 3.4], np.geomspace(3.2, 1.3, 28)])
    bump[i + 30 :] = 1.3
    sim.series["loss"] *= bump
    sim.series["grad_norm"][i : i + 6] *= np.array([4, 6, 5, 4, 3, 2.0])
    k = sim.ei(325)
    sim.evals["avg_bit_acc"][k:] = 0.5 + np.abs(sim.enoise(0.01))[k:]
    return sim, label(
        ["metric_collapse", "loss_spike"],
        "metric_collapse",
        325,
        "data_change",
        "bit task like the trainer's: data_weights -> mirror at 300; loss x3.4 and back,"
        " avg_bit_acc 0.93 -> 0.5",
    )


@trace
def syn_metric_collapse_lr_change() -> Made:
    sim = Sim("syn_metric_collapse_lr_change", steps=5000, log_every=20, eval_every=250)
    sim.basic(1.0, 0.25, 0.25, 0.04, 1e-3, 250, "const", g=(0.6, 0.3, 0.15), sps=1500)
    sim.evals["val_acc"] = sim.acc(0.4, 0.88, 0.2, 0.004)
    sim.control(3000, lr=1e-2)
    sim.series["lr"][sim.i(3001) :] = 1e-2
    sim.series["loss"] *= ramp(sim, 3020, 10, 1.0, 2.2)
    k = sim.ei(3250)
    sim.evals["val_acc"][k:] = 0.42 + sim.enoise(0.01)[k:]
    return sim, label(
        ["metric_collapse", "divergence"],
        "metric_collapse",
        3250,
        "lr_change",
        "lr x10 by controls at 3000: val_acc 0.88 -> 0.42 from 3250, loss x2.2 and stays",
    )


@trace
def syn_metric_collapse_unknown() -> Made:
    sim = Sim("syn_metric_collapse_unknown", steps=12000, log_every=50, eval_every=600)
    sim.basic(2.0, 0.5, 0.25, 0.03, 5e-4, 600, "cosine", g=(0.8, 0.3, 0.15), sps=3000)
    sim.evals["accuracy"] = sim.acc(0.3, 0.81, 0.2, 0.004)
    k = sim.ei(9000)
    sim.evals["accuracy"][k:] = 0.47 + sim.enoise(0.006)[k:]
    return sim, label(
        ["metric_collapse"],
        "metric_collapse",
        9000,
        "unknown",
        "eval accuracy 0.81 -> ~0.47 from the 9000 eval on; train loss unaffected, no change",
    )


@trace
def syn_metric_collapse_to_constant() -> Made:
    sim = Sim("syn_metric_collapse_to_constant", steps=3000, log_every=10, eval_every=100)
    sim.basic(0.69, 0.15, 0.25, 0.04, 2e-3, 100, "const", g=(0.1, 0.05, 0.15), sps=1200)
    bit_task(sim, 0.6, 0.93, 0.15)
    k = sim.ei(1800)
    sim.evals["avg_bit_acc"][k:] = 0.5
    return sim, label(
        ["metric_collapse", "degenerate_metric"],
        "metric_collapse",
        1800,
        "unknown",
        "avg_bit_acc 0.93 -> exactly 0.5 at every eval from 1800 (a constant output); loss fine",
    )


# overfitting ----------------------------------------------------------------------------


def _overfit(sim: Sim, v0: float, vmin: float, at_min: float, rise: float, key: str) -> None:
    """val loss falls to vmin at progress at_min, then rises by the factor ``rise``."""
    x = sim.es / sim.steps
    down = vmin + (v0 - vmin) * np.exp(-x / (at_min / 4))
    up = np.where(x > at_min, 1 + (rise - 1) * ((x - at_min) / (1 - at_min)), 1.0)
    sim.evals[key] = down * up * np.exp(sim.enoise(0.01))


@trace
def syn_overfitting_classic() -> Made:
    sim = Sim("syn_overfitting_classic", steps=6000, log_every=20, eval_every=200, ckpt_every=2000)
    sim.basic(2.3, 0.04, 0.2, 0.05, 1e-3, 200, "cosine", g=(0.8, 0.2, 0.15), sps=1200)
    _overfit(sim, 2.3, 0.6, 0.33, 2.2, "val_loss")
    sim.evals["val_acc"] = np.minimum(sim.acc(0.3, 0.82, 0.12, 0.004), 0.82)
    return sim, label(
        ["overfitting"],
        "overfitting",
        2000,
        "overfit_small_data",
        "small dataset: train loss 2.3 -> 0.04, val_loss min 0.6 at 2000 then up to ~1.3;"
        " val_acc plateaus",
    )


@trace
def syn_overfitting_fast() -> Made:
    sim = Sim("syn_overfitting_fast", steps=400, log_every=1, eval_every=20, batch=16)
    sim.basic(1.0, 0.01, 0.15, 0.1, 1e-3, 20, "const", g=(0.5, 0.05, 0.2), sps=600)
    _overfit(sim, 1.0, 0.45, 0.3, 2.5, "val_loss")
    return sim, label(
        ["overfitting"],
        "overfitting",
        120,
        "overfit_small_data",
        "400 steps, every step logged: train loss 1.0 -> 0.01, val_loss min at 120, x2.5 by 400",
    )


@trace
def syn_overfitting_regression() -> Made:
    sim = Sim("syn_overfitting_regression", steps=15000, log_every=50, eval_every=500)
    sim.basic(9.0, 0.8, 0.25, 0.04, 3e-4, 500, "cosine", g=(5.0, 1.0, 0.15), sps=4000)
    _overfit(sim, 9.0, 3.0, 0.3, 2.0, "eval_loss")
    return sim, label(
        ["overfitting"],
        "overfitting",
        4500,
        "overfit_small_data",
        "regression scale (9 -> 0.8 train); eval_loss min 3.0 at 4500, then up to ~6 by 15000",
    )


@trace
def syn_overfitting_late() -> Made:
    sim = Sim("syn_overfitting_late", steps=2000, log_every=10, eval_every=100, batch=32)
    sim.basic(0.69, 0.02, 0.25, 0.08, 3e-3, 50, "const", g=(0.2, 0.05, 0.2), sps=500)
    _overfit(sim, 0.69, 0.3, 0.6, 1.8, "val_loss")
    bit_task(sim, 0.6, 0.9, 0.15)
    return sim, label(
        ["overfitting"],
        "overfitting",
        1200,
        "overfit_small_data",
        "train loss to 0.02; val_loss min 0.3 at 1200, rising every eval to ~0.54; acc flat ~0.9",
    )


# degenerate_metric ----------------------------------------------------------------------


@trace
def syn_degenerate_metric_one_class() -> Made:
    sim = Sim("syn_degenerate_metric_one_class", steps=3000, log_every=10, eval_every=100)
    sim.basic(2.3026, 2.3026, 1.0, 0.004, 1e-3, 100, "const", g=(0.2, 0.15, 0.2), sps=1000)
    acc = np.full(len(sim.es), 0.1)
    acc[:3] = [0.1041, 0.0987, 0.1013]  # the first evals still vary a little
    sim.evals["val_acc"] = acc
    return sim, label(
        ["degenerate_metric", "no_progress"],
        "degenerate_metric",
        400,
        "unknown",
        "10 classes, the model settles on one: val_acc exactly 0.1 from the 4th eval (400) to the"
        " end, loss 2.30 flat",
    )


@trace
def syn_degenerate_metric_loss_stuck() -> Made:
    sim = Sim("syn_degenerate_metric_loss_stuck", steps=8000, log_every=20, eval_every=1000)
    sim.basic(2.0, 0.4, 0.2, 0.04, 1e-3, 400, "cosine", g=(0.8, 0.3, 0.15), sps=1800)
    i = sim.i(3000)
    sim.series["loss"][i:] = 0.612353
    sim.evals["val_loss"] = sim.decay(2.0, 0.45, 0.2, 0.01, sim.es / sim.steps)
    return sim, label(
        ["degenerate_metric"],
        "degenerate_metric",
        3000,
        "unknown",
        "loss exactly 0.612353 on every line from step 3000 (a stale value logged); grad and"
        " val_loss keep moving",
        ["no_progress"],
    )


@trace
def syn_degenerate_metric_accuracy_frozen() -> Made:
    sim = Sim("syn_degenerate_metric_accuracy_frozen", steps=20000, log_every=50, eval_every=500)
    sim.basic(3.0, 0.8, 0.2, 0.02, 6e-4, 1000, "cosine", g=(1.0, 0.4, 0.12), sps=6000)
    sim.evals["accuracy"] = sim.acc(0.2, 0.7, 0.2, 0.004)
    sim.evals["accuracy"][sim.ei(6000) :] = 0.734375
    return sim, label(
        ["degenerate_metric"],
        "degenerate_metric",
        6000,
        "unknown",
        "eval accuracy exactly 0.734375 at 28 evals from step 6000 while the loss keeps falling",
    )


@trace
def syn_degenerate_metric_grad_norm_clipped() -> Made:
    sim = Sim("syn_degenerate_metric_grad_norm_clipped", steps=1200, log_every=4, batch=64)
    sim.basic(1.5, 0.3, 0.3, 0.06, 1e-3, 60, "const", g=(0.6, 0.3, 0.2), sps=700)
    sim.series["grad_norm"][sim.i(200) :] = 1.0
    return sim, label(
        ["degenerate_metric"],
        "degenerate_metric",
        200,
        "unknown",
        "grad_norm varies for 200 steps, then exactly 1.0 on every line (the clipped value logged)",
    )


# throughput_drop ------------------------------------------------------------------------


@trace
def syn_throughput_drop_step() -> Made:
    sim = Sim("syn_throughput_drop_step", steps=6000, log_every=20, eval_every=1000)
    sim.basic(1.2, 0.2, 0.25, 0.04, 1e-3, 300, "cosine", sps=1200)
    sim.series["samples_per_s"][sim.i(3000) :] *= 0.5
    return sim, label(
        ["throughput_drop"],
        "throughput_drop",
        3000,
        "unknown",
        "samples_per_s 1200 -> 600 at step 3000 and stays (another job on the machine)",
    )


@trace
def syn_throughput_drop_tokens() -> Made:
    sim = Sim(
        "syn_throughput_drop_tokens",
        steps=20000,
        log_every=50,
        batch=64,
        device="cuda:0",
        start_extra={"seq_len": 1024},
    )
    sim.basic(6.5, 2.8, 0.15, 0.02, 3e-4, 1000, "cosine", g=(1.0, 0.3, 0.1), sps=1.0)
    del sim.series["samples_per_s"]
    tps = sim.throughput(150_000)
    tps[sim.i(10000) :] *= 0.55
    sim.series["tokens_per_s"] = tps
    return sim, label(
        ["throughput_drop"],
        "throughput_drop",
        10000,
        "unknown",
        "tokens_per_s 150k -> 82k (-45 %) at step 10000 of 20000 and stays; loss fine",
    )


@trace
def syn_throughput_drop_data_change() -> Made:
    sim = Sim("syn_throughput_drop_data_change", steps=3000, log_every=10, ckpt_every=1000)
    sim.basic(0.69, 0.12, 0.25, 0.05, 3e-3, 100, "const", g=(0.06, 0.02, 0.2), sps=900)
    sim.control(1500, data_weights={"echo": 1.0, "count": 2.0})
    sim.data_pause[1500] = 3.0
    sim.series["samples_per_s"][sim.i(1501) :] *= 0.4
    sim.series["loss"] *= ramp(sim, 1510, 3, 1.0, 1.1)
    return sim, label(
        ["throughput_drop"],
        "throughput_drop",
        1510,
        "data_change",
        "data_weights -> echo+count at step 1500: samples_per_s 900 -> 360 from the next line",
    )


@trace
def syn_throughput_drop_gradual() -> Made:
    sim = Sim("syn_throughput_drop_gradual", steps=10000, log_every=25, eval_every=1000)
    sim.basic(3.0, 1.0, 0.2, 0.03, 5e-4, 500, "cosine", sps=2000)
    sim.series["samples_per_s"] *= ramp(sim, 5000, sim.i(8000) - sim.i(5000), 1.0, 0.35)
    return sim, label(
        ["throughput_drop"],
        "throughput_drop",
        6500,
        "unknown",
        "samples_per_s sinks gradually 2000 -> 700 from step 5000 to 8000 (a leak), stays low",
    )


# stall ----------------------------------------------------------------------------------


@trace
def syn_stall_mid_train() -> Made:
    sim = Sim("syn_stall_mid_train", steps=5000, log_every=10, eval_every=500)
    sim.basic(1.5, 0.3, 0.25, 0.05, 1e-3, 200, "cosine", sps=1300)
    sim.gaps[2310] = 1800.0
    return sim, label(
        ["stall"],
        "stall",
        2300,
        "unknown",
        "30 min without a line between steps 2300 and 2310 (lines every ~2 s), in the train phase",
    )


@trace
def syn_stall_after_checkpoint() -> Made:
    sim = Sim("syn_stall_after_checkpoint", steps=8000, log_every=20, ckpt_every=2000)
    sim.basic(2.5, 0.6, 0.25, 0.04, 5e-4, 400, "cosine", sps=1600)
    sim.gaps[4020] = 900.0
    return sim, label(
        ["stall"],
        "stall",
        4000,
        "unknown",
        "the checkpoint at 4000 finishes (phase train again), then 15 min of nothing until 4020",
    )


@trace
def syn_stall_hang_sparse() -> Made:
    sim = Sim("syn_stall_hang_sparse", steps=20000, log_every=50, device="cuda:0", ckpt_every=5000)
    sim.basic(4.0, 1.5, 0.2, 0.02, 6e-4, 1000, "cosine", sps=4000)
    sim.gaps[14050] = 3600.0
    return sim, label(
        ["stall"],
        "stall",
        14000,
        "unknown",
        "a collective hangs for an hour between steps 14000 and 14050 (lines every ~3 s)",
    )


@trace
def syn_stall_short_run() -> Made:
    sim = Sim("syn_stall_short_run", steps=300, log_every=1, batch=32, eval_every=50)
    sim.basic(0.69, 0.2, 0.3, 0.06, 3e-3, 20, "const", g=(0.06, 0.02, 0.2), sps=350)
    bit_task(sim, 0.6, 0.93, 0.2)
    sim.gaps[181] = 400.0
    return sim, label(
        ["stall"],
        "stall",
        180,
        "unknown",
        "every step logged (~0.1 s apart); 400 s without a line between steps 180 and 181",
    )


# healthy: plain -------------------------------------------------------------------------


@trace
def syn_healthy_bit_task() -> Made:
    sim = Sim("syn_healthy_bit_task", steps=300, log_every=10, eval_every=50, batch=256)
    sim.basic(0.69, 0.18, 0.3, 0.02, 3e-3, 20, "const", g=(0.06, 0.02, 0.1), sps=850)
    sim.initial_controls = {"lr": 3e-3}
    bit_task(sim, 0.82, 0.937, 0.12)
    return sim, healthy("like the bundled trainer's echo run: 300 steps, evals every 50")


@trace
def syn_healthy_lm() -> Made:
    sim = Sim("syn_healthy_lm", steps=20000, log_every=50, eval_every=2000, ckpt_every=5000)
    sim.basic(10.8, 2.9, 0.1, 0.015, 6e-4, 1000, "cosine", g=(3.0, 0.3, 0.12), sps=2500)
    sim.series["loss"] = sim.power(10.8, 2.2, 0.02, 0.6, 0.015)
    sim.evals["val_loss"] = sim.power(10.8, 2.3, 0.02, 0.6, 0.0)[sim.s % 2000 == 0] * np.exp(
        sim.enoise(0.003)
    )
    return sim, healthy("language model: loss 10.8 -> ~3 on a power law, cosine lr, 20000 steps")


@trace
def syn_healthy_small_regression() -> Made:
    sim = Sim("syn_healthy_small_regression", steps=200, log_every=1, batch=32)
    sim.basic(0.05, 0.01, 0.3, 0.05, 1e-3, 10, "cosine", g=(0.02, 0.008, 0.15), sps=3000)
    return sim, healthy("200 steps, every step logged, MSE 0.05 -> 0.011")


# healthy: hard cases a naive detector would flag ----------------------------------------------


@trace
def syn_hard_healthy_warmup_bump() -> Made:
    sim = Sim("syn_hard_healthy_warmup_bump", steps=5000, log_every=10, eval_every=500)
    sim.basic(2.3, 0.3, 0.2, 0.03, 1e-3, 400, "cosine", g=(1.0, 0.3, 0.15), sps=1500)
    x = sim.s.astype(float)
    sim.series["loss"] *= 1 + 0.35 * np.exp(-(((x - 250) / 80) ** 2))  # +35 % at step 250
    sim.series["grad_norm"] *= 1 + 1.5 * np.exp(-(((x - 250) / 80) ** 2))
    return sim, healthy("loss rises +35 % around step 250 during the 400-step warmup, then falls")


@trace
def syn_hard_healthy_sgdr() -> Made:
    sim = Sim("syn_hard_healthy_sgdr", steps=8000, log_every=20, eval_every=1000)
    sim.basic(1.8, 0.2, 0.3, 0.03, 2e-3, 200, "const", g=(0.8, 0.3, 0.15), sps=1800)
    period = 2000
    s = sim.s.astype(float)
    phase = (s % period) / period
    sim.series["lr"] = np.minimum(1.0, s / 200) * (
        1e-5 + (2e-3 - 1e-5) * 0.5 * (1 + np.cos(math.pi * phase))
    )
    bump = np.ones(sim.n)
    for r in (2000, 4000, 6000):
        bump *= 1 + 0.12 * np.exp(-np.clip(s - r, -1, None) / 150) * (s > r)
    sim.series["loss"] *= bump
    sim.series["grad_norm"] *= 1 + 0.8 * (bump - 1) / 0.12
    return sim, healthy("SGDR: lr jumps back to 2e-3 every 2000 steps, loss bumps +12 % then falls")


@trace
def syn_hard_healthy_eval_dip() -> Made:
    sim = Sim("syn_hard_healthy_eval_dip", steps=4000, log_every=20, eval_every=200)
    sim.basic(0.69, 0.15, 0.2, 0.03, 2e-3, 200, "const", g=(0.1, 0.04, 0.15), sps=1200)
    bit_task(sim, 0.7, 0.935, 0.12)
    sim.evals["avg_bit_acc"][sim.ei(2600)] -= 0.018
    return sim, healthy("avg_bit_acc dips 1.8 points once (eval at 2600) and is back at the next")


@trace
def syn_hard_healthy_converged_tail() -> Made:
    sim = Sim("syn_hard_healthy_converged_tail", steps=10000, log_every=25, eval_every=1000)
    sim.basic(0.5, 0.012, 0.05, 0.01, 1e-3, 300, "const", g=(0.5, 0.02, 0.15), sps=2500)
    sim.evals["val_loss"] = sim.decay(0.5, 0.014, 0.05, 0.01, sim.es / sim.steps)
    return sim, healthy("converged by ~2000: loss flat at 0.012 +- 1 % for the last 80 %")


@trace
def syn_hard_healthy_constant_metrics() -> Made:
    sim = Sim("syn_hard_healthy_constant_metrics", steps=3000, log_every=10, eval_every=250)
    sim.basic(0.69, 0.2, 0.25, 0.03, 3e-3, 1, "const", g=(0.1, 0.04, 0.15), sps=1000)
    sim.series["batch_size"] = np.full(sim.n, 256.0)
    bit_task(sim, 0.6, 0.93, 0.15)
    return sim, healthy(
        "lr exactly 3e-3 on every line (no warmup), batch_size and ceiling constant"
    )


@trace
def syn_hard_healthy_sparse_logging() -> Made:
    sim = Sim("syn_hard_healthy_sparse_logging", steps=20000, log_every=500, eval_every=5000)
    sim.basic(3.0, 0.5, 0.25, 0.02, 6e-4, 1000, "cosine", g=(1.0, 0.3, 0.1), sps=3000)
    sim.evals["val_loss"] = sim.decay(3.0, 0.55, 0.25, 0.005, sim.es / sim.steps)
    return sim, healthy("a line every 500 steps (~40 s apart): 40 lines for 20000 steps")


@trace
def syn_hard_healthy_noisy_small_batch() -> Made:
    sim = Sim("syn_hard_healthy_noisy_small_batch", steps=2400, log_every=1, batch=4)
    sim.basic(1.5, 0.4, 0.3, 0.3, 1e-4, 100, "cosine", g=(1.0, 0.6, 0.3), sps=200)
    return sim, healthy("batch 4, every step logged: loss noise +-30 % (clipped at 3 sigma)")


@trace
def syn_hard_healthy_throughput_dip() -> Made:
    sim = Sim("syn_hard_healthy_throughput_dip", steps=6000, log_every=20, eval_every=1000)
    sim.basic(1.2, 0.2, 0.25, 0.04, 1e-3, 300, "cosine", sps=1500)
    sim.series["samples_per_s"][sim.i(2500) : sim.i(2800)] *= 0.8
    return sim, healthy("samples_per_s 20 % lower for 300 steps (2500-2800), then back")


@trace
def syn_hard_healthy_long_evals() -> Made:
    sim = Sim("syn_hard_healthy_long_evals", steps=10000, log_every=20, eval_every=2000)
    sim.basic(2.0, 0.4, 0.25, 0.03, 1e-3, 500, "cosine", sps=2000)
    sim.eval_s = 900.0
    sim.evals["val_loss"] = sim.decay(2.0, 0.45, 0.25, 0.005, sim.es / sim.steps)
    sim.evals["val_acc"] = sim.acc(0.3, 0.8, 0.25, 0.003)
    return sim, healthy("each eval takes 15 min (lines ~2.6 s apart): gaps inside eval phases")


@trace
def syn_hard_healthy_checkpoint_pauses() -> Made:
    sim = Sim("syn_hard_healthy_checkpoint_pauses", steps=12000, log_every=25, ckpt_every=1000)
    sim.basic(3.0, 0.8, 0.25, 0.03, 5e-4, 500, "cosine", sps=2500)
    sim.ckpt_s = 240.0
    return sim, healthy("a 4-minute checkpoint every 1000 steps (lines ~2.6 s apart), in phases")


@trace
def syn_hard_healthy_resumed() -> Made:
    name = "syn_hard_healthy_resumed"
    full = Sim(name, steps=6000, log_every=20, ckpt_every=1000)
    full.basic(2.0, 0.3, 0.25, 0.04, 1e-3, 300, "cosine", sps=1500)
    # preempted after the line of step 3640 (no end line) ...
    first = Sim(name, steps=6000, log_every=20, ckpt_every=1000, end=False, stop_at=3640)
    first.series = {k: v[: first.n] for k, v in full.series.items()}
    # ... and restarted 7 min later from the step-3000 checkpoint (the same data order)
    second = Sim(name, steps=6000, log_every=20, ckpt_every=1000, first_step=3000)
    second.series = {k: v[full.i(3020) :] for k, v in full.series.items()}
    second.t0 = float(first.render()[-1]["t"]) + 420.0
    return [first, second], healthy(
        "preempted after step 3640 (no end line), resumed 7 min later from the step-3000"
        " checkpoint: a new start line, steps go back to 3020"
    )


@trace
def syn_hard_healthy_lr_decrease() -> Made:
    sim = Sim("syn_hard_healthy_lr_decrease", steps=4000, log_every=10, eval_every=500)
    sim.basic(1.0, 0.35, 0.15, 0.04, 3e-3, 100, "const", g=(0.5, 0.3, 0.15), sps=1400)
    sim.control(2500, lr=3e-4)
    sim.series["lr"][sim.i(2501) :] = 3e-4
    sim.series["loss"] *= ramp(sim, 2510, 20, 1.0, 0.7)
    bit_task(sim)
    return sim, healthy(
        "controls lower the lr x10 at step 2500; loss drops 30 % (a change, no fault)"
    )


@trace
def syn_hard_healthy_data_change() -> Made:
    sim = Sim("syn_hard_healthy_data_change", steps=5000, log_every=20, eval_every=250)
    sim.basic(0.69, 0.15, 0.25, 0.03, 3e-3, 100, "const", g=(0.08, 0.03, 0.15), sps=1100)
    sim.initial_controls = {"lr": 3e-3}
    sim.control(2000, data_weights={"echo": 3.0, "shift": 1.0})
    sim.data_pause[2000] = 90.0
    sim.series["loss"] *= ramp(sim, 2020, 3, 1.0, 1.08)
    bit_task(sim, 0.6, 0.93, 0.15)
    return sim, healthy("data_weights add shift at 2000 (90 s data phase): loss +8 %, eval unhurt")


@trace
def syn_hard_healthy_grad_spiky() -> Made:
    sim = Sim("syn_hard_healthy_grad_spiky", steps=15000, log_every=50, device="cuda:0")
    sim.basic(5.0, 2.0, 0.2, 0.02, 3e-4, 1000, "cosine", g=(1.0, 0.25, 0.15), sps=7000)
    for step in range(1500, 15000, 1100):
        sim.series["grad_norm"][sim.i(step)] *= float(sim.rng.uniform(2.5, 4.0))
    return sim, healthy("grad_norm has a 2.5-4x blip every ~1100 steps (normal), loss smooth")


@trace
def syn_hard_healthy_early_grad() -> Made:
    sim = Sim("syn_hard_healthy_early_grad", steps=5000, log_every=10)
    sim.basic(6.0, 1.0, 0.2, 0.03, 1e-3, 250, "cosine", g=(1.0, 0.5, 0.15), sps=2000)
    sim.series["grad_norm"][:10] *= np.geomspace(30.0, 1.5, 10)
    return sim, healthy("grad_norm ~30 at the first lines, falling to ~1 by step 100, then steady")


@trace
def syn_hard_healthy_val_noise() -> Made:
    sim = Sim("syn_hard_healthy_val_noise", steps=6000, log_every=20, eval_every=300)
    sim.basic(1.5, 0.3, 0.25, 0.04, 1e-3, 300, "cosine", sps=1200)
    sim.evals["val_loss"] = sim.decay(1.5, 0.5, 0.15, 0.03, sim.es / sim.steps)
    sim.evals["val_loss"][sim.ei(3600) : sim.ei(3600) + 2] *= 1.08
    return sim, healthy(
        "val_loss flat at ~0.5 from 1800 with 3 % noise and one 2-eval bump of +8 %"
    )


@trace
def syn_hard_healthy_saturated_accuracy() -> Made:
    sim = Sim("syn_hard_healthy_saturated_accuracy", steps=2000, log_every=10, eval_every=100)
    sim.basic(0.69, 0.004, 0.08, 0.05, 1e-3, 50, "const", g=(0.3, 0.01, 0.15), sps=1500)
    acc = sim.acc(0.6, 1.0, 0.06, 0.0)
    acc[sim.ei(600) :] = 1.0
    sim.evals["val_acc"] = acc
    return sim, healthy("a solved task: val_acc exactly 1.0 (the maximum) from step 600 on")


@trace
def syn_hard_healthy_compile_warmup() -> Made:
    sim = Sim("syn_hard_healthy_compile_warmup", steps=3000, log_every=10, device="cuda:0")
    sim.basic(2.0, 0.4, 0.25, 0.03, 1e-3, 100, "cosine", sps=8000)
    sim.series["samples_per_s"][:3] *= np.array([0.02, 0.3, 0.8])
    sim.series["fwd_ms"] = 4.0 * sim.noise(0.05)
    sim.series["fwd_ms"][:3] = [900.0, 12.0, 5.0]
    return sim, healthy(
        "torch.compile: the first step line ~30 s after the train phase starts (samples_per_s"
        " 2 %, then 30 %), then steady"
    )


@trace
def syn_hard_healthy_early_plateau_running() -> Made:
    sim = Sim(
        "syn_hard_healthy_early_plateau_running",
        steps=10000,
        log_every=10,
        end=False,
        batch=128,
        stop_at=400,
    )
    sim.basic(0.6931, 0.6931, 1.0, 0.01, 3e-3, 100, "const", g=(0.05, 0.05, 0.15), sps=1100)
    return sim, healthy(
        "still running: 400 of 10000 steps logged (4 %), the loss still on its initial plateau"
    )


# -- writing ------------------------------------------------------------------------------


def build() -> dict[str, tuple[list[dict[str, Any]], Label]]:
    """{file name: (lines, label)} for every trace."""
    out: dict[str, tuple[list[dict[str, Any]], Label]] = {}
    for name, fn in TRACES.items():
        made, lab = fn()
        attempts = made if isinstance(made, list) else [made]
        out[f"{name}.jsonl"] = ([line for sim in attempts for line in sim.render()], lab)
    return out


def main() -> int:
    CORPUS.mkdir(parents=True, exist_ok=True)
    traces = build()
    for stale in CORPUS.glob("syn_*.jsonl"):
        if stale.name not in traces:
            stale.unlink()
    for fname, (lines, _) in traces.items():
        text = "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in lines)
        (CORPUS / fname).write_text(text)
    labels: dict[str, Any] = json.loads(LABELS.read_text()) if LABELS.exists() else {}
    labels = {k: v for k, v in labels.items() if not k.startswith("syn_")}
    labels.update({fname: lab for fname, (_, lab) in traces.items()})
    LABELS.write_text(json.dumps(dict(sorted(labels.items())), indent=1) + "\n")
    print(f"wrote {len(traces)} synthetic traces into {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
