"""Training-dynamics detectors (DESIGN section 12): pure, incremental, constant work per line.

:class:`Detectors` is fed the job's metrics lines one at a time (``feed``) and returns
the symptoms each line completes; ``close`` adds what only the end of the stream decides.
It keeps the context the causes are read from (controls changes, data changes,
checkpoints, phases) in :attr:`Detectors.context`. No clock, no I/O: the supervisor feeds
it live, ``harness diagnose`` feeds it a file, the tests feed it lists.

The rules, their thresholds and where they come from are in ``docs/diagnosis.md``; the
constants below are those defaults. Every value comes from the job and is untrusted: a
line that is not a number where one is expected is skipped, never raised on. A metric a
job does not report disables the detectors that need it. Each symptom is reported once
per run, at its first onset.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from harness.core.values import as_float

__all__ = [
    "ACCURACY_HINTS",
    "CAUSES",
    "EVAL_LOSSES",
    "SYMPTOMS",
    "Change",
    "Context",
    "Detectors",
    "Symptom",
]

SYMPTOMS = (
    "nonfinite",
    "loss_spike",
    "divergence",
    "no_progress",
    "grad_explosion",
    "vanishing_gradient",
    "metric_collapse",
    "overfitting",
    "degenerate_metric",
    "throughput_drop",
    "stall",
)
CAUSES = ("lr_too_high", "lr_change", "data_change", "bad_batch", "overfit_small_data", "unknown")
Severity = Literal["info", "warn", "critical"]
SEVERITY: dict[str, Severity] = {
    "nonfinite": "critical",
    "divergence": "critical",
    "metric_collapse": "critical",
    "loss_spike": "info",
}

EVAL_LOSSES = ("val_loss", "eval_loss", "valid_loss", "validation_loss")
ACCURACY_HINTS = ("acc",)  # a metric whose name holds one of these is accuracy-like
THROUGHPUT = ("samples_per_s", "tokens_per_s")
_NOT_ACCURACY = ("ceiling",)  # the bundled trainer's constant bound beside its accuracy

# -- the defaults (docs/diagnosis.md says why each is what it is) ---------------------------
WARMUP_LINES = 10  # train-loss lines before the spike rule has a baseline
SPIKE_WINDOW = 50  # lines in the loss level (divergence) and in the line-to-line noise (spikes)
SPIKE_SIGMA = 6.0  # a spike: above the smoothed level + 6 sigma of the noise ...
SPIKE_REL = 0.25  # ... and at least 25 % above the level
SPIKE_GROSS = 1.6  # in the first lines, a warmup or a restart: 1.6x the mean and 4 sigma
SPIKE_RECOVER_LINES = 20  # a spike must come back within this many lines: under mean +
SPIKE_BACK = 0.5  # 2 sigma, or below half-way from its peak to the mean before it
EMA_ALPHA = 0.1  # smoothing of the train loss for divergence and progress
DIVERGE_LOST = 0.3  # divergence: 30 % of the progress made is lost ...
DIVERGE_RISE = 1.5  # or the level is 1.5x its lowest ...
DIVERGE_LINES = 10  # ... for this many lines in a row
DIVERGE_BLOWUP = 2.0  # or the smoothed loss is twice its start, for as long
PROGRESS_AT = 0.3  # no_progress is judged once 30 % of total_steps are done ...
PROGRESS_LINES = 200  # ... or after this many loss lines when the total is unknown
PROGRESS_MIN = 0.05  # and means a fall of less than 5 % from the start
GRAD_WINDOW = 100  # values of grad_norm in its running median
GRAD_MIN_VALUES = 10
GRAD_EXPLODE = 10.0  # grad_explosion: >= 10x the running median
GRAD_VANISH = 1e-3  # vanishing: <= 1/1000 of the early median (or 1e-8) ...
GRAD_VANISH_LINES = 10  # ... for this many lines
GRAD_TINY = 1e-6  # or below this from the start, while the loss does not fall
COLLAPSE_REL = 0.15  # metric_collapse: 15 % below the best ...
COLLAPSE_ABS = 0.05  # ... and 0.05 below it (accuracy in [0, 1]), at two evals in a row
OVERFIT_EVALS = 3  # overfitting: eval loss up at 3 evals in a row ...
OVERFIT_RISE = 0.1  # ... 10 % above its best, while train loss fell
CONSTANT_LINES = 50  # degenerate: exactly constant for 50 step lines ...
CONSTANT_EVALS = 5  # ... or 5 evals, after it had varied
THROUGHPUT_DROP = 0.6  # throughput_drop: the smoothed rate at <= 60 % of its best ...
THROUGHPUT_LINES = 10  # ... for 10 lines in a row
STALL_GAP_S = 60.0  # stall: a gap of at least 60 s ...
STALL_GAP_X = 10.0  # ... and 10x the usual gap between lines, in the train phase
CONTEXT_KEEP = 256  # changes and checkpoints kept for the causes


@dataclass(frozen=True)
class Symptom:
    """One symptom at its onset, with the numbers that decided it."""

    symptom: str
    step: int | None
    t: float | None
    metric: str
    evidence: tuple[str, ...]  # lines a person reads, each with its numbers
    numbers: Mapping[str, float] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        return SEVERITY.get(self.symptom, "warn")


@dataclass(frozen=True)
class Change:
    """A change the job reported applying: ``lr`` (before and after) or ``data``."""

    kind: str  # "lr", "data", "other"
    step: int | None  # the last step line before it
    t: float | None
    line: int  # its line number in the stream (1-based)
    before: Any = None
    after: Any = None


@dataclass
class Context:
    """What the causes are read from: changes, checkpoints, the lr, the run's extent."""

    changes: deque[Change] = field(default_factory=lambda: deque(maxlen=CONTEXT_KEEP))
    # (step, path, lr in effect then): where a rollback can resume from, and with what lr
    checkpoints: deque[tuple[int, str, float | None]] = field(
        default_factory=lambda: deque(maxlen=CONTEXT_KEEP)
    )
    lr_first: float | None = None
    lr_max: float | None = None
    lr_last: float | None = None
    total_steps: int | None = None
    lines: int = 0
    step: int | None = None
    loss_start: float | None = None
    nonfinite_lines: int = 0  # lines with a non-finite loss or gradient
    grad_isolated: bool | None = None  # the line after the first explosion was back to normal


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -(2**63) < v < 2**63 else None


def _finite(v: Any) -> float | None:
    x = as_float(v)
    return x if x is not None and math.isfinite(x) else None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class _Window:
    """Mean and sigma of the last ``n`` values, O(1) per value."""

    def __init__(self, n: int) -> None:
        self.values: deque[float] = deque(maxlen=n)
        self.sum = 0.0
        self.sq = 0.0

    def add(self, x: float) -> None:
        if len(self.values) == self.values.maxlen:
            old = self.values[0]
            self.sum -= old
            self.sq -= old * old
        self.values.append(x)
        self.sum += x
        self.sq += x * x

    def mean(self) -> float:
        return self.sum / len(self.values)

    def sigma(self) -> float:
        m = self.mean()
        return math.sqrt(max(self.sq / len(self.values) - m * m, 0.0))


class _Median:
    """Median of the last ``n`` values, recomputed every ``every`` values (and while fewer
    than 20 are in): one sort of ``n`` floats per ``every`` values, not work per value."""

    def __init__(self, n: int, every: int = 8) -> None:
        self.order: deque[float] = deque(maxlen=n)
        self.every = every
        self._since = 0
        self._median = 0.0

    def add(self, x: float) -> None:
        self.order.append(x)
        self._since += 1
        if self._since >= self.every or len(self.order) < 20:
            self._since = 0
            s = sorted(self.order)
            k = len(s)
            self._median = s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2

    @property
    def n(self) -> int:
        return len(self.order)

    def median(self) -> float:
        return self._median

    def max(self) -> float:
        return max(self.order)


@dataclass
class _Streak:
    """Consecutive observations meeting a condition, and where the streak began."""

    length: int = 0
    step: int | None = None
    t: float | None = None

    def hit(self, step: int | None, t: float | None) -> int:
        if self.length == 0:
            self.step, self.t = step, t
        self.length += 1
        return self.length

    def miss(self) -> None:
        self.length = 0


@dataclass
class _Constant:
    last: float | None = None
    varied: bool = False
    streak: _Streak = field(default_factory=_Streak)


class Detectors:
    """Every detector over one metrics stream.

    ``gated_up`` names metrics the spec gates with ``>=`` or ``>`` (accuracy-like, whatever
    their name). ``total_steps`` may come from the spec; a ``start`` line's wins.
    """

    def __init__(self, *, gated_up: Collection[str] = (), total_steps: int | None = None) -> None:
        self.context = Context(total_steps=total_steps)
        self.gated_up = frozenset(gated_up)
        self.found: dict[str, Symptom] = {}  # each symptom once, at its first onset
        self._phase = "train"
        self._resumed = False
        # train loss
        self._spike_lines = 0  # train-loss lines in the spike rule's baseline
        self._diffs = _Window(SPIKE_WINDOW)  # line-to-line changes of the train loss
        self._base: float | None = None  # its smoothed level, spikes left out
        self._prev_ok: float | None = None
        self._spike: tuple[int | None, float | None, float, float, float, int] | None = None
        self._ema: float | None = None
        self._first: list[float] = []
        self._loss_lines = 0
        self._diverge = _Streak()
        self._best_at: tuple[int | None, float | None] = (None, None)  # where the loss was best
        self._level = _Window(SPIKE_WINDOW)  # every finite train loss, spikes included
        self._level_best: float | None = None
        self._progress_done = False
        # gradients
        self._grad = _Median(GRAD_WINDOW, every=16)
        self._grad_early: float | None = None
        self._vanish = _Streak()
        self._creep = _Streak()
        self._grad_watch: float | None = None
        # eval metrics
        self._best: dict[str, float] = {}
        self._low: dict[str, tuple[int | None, float | None, float]] = {}
        self._eval_loss: dict[str, deque[tuple[int | None, float, float | None]]] = {}
        # degenerate metrics and throughput
        self._constant: dict[str, _Constant] = {}
        self._kinds: dict[str, str] = {}
        self._plans: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
        self._loss_c, self._grad_c = _Constant(), _Constant()  # the degenerate rule's state
        self._nonfinite_step: int | None = None
        self._rate_ema: float | None = None
        self._rate_best = 0.0
        self._rate_values = 0
        self._slow = _Streak()
        # time gaps
        self._last_t: float | None = None
        self._last_step: int | None = None
        self._gap_ema: float | None = None  # the usual gap between train-phase lines
        self._gaps_seen = 0
        self._lr_prev: float | None = None
        self._restart_grace = 0

    # -- the stream ------------------------------------------------------------------------

    def feed(self, rec: Mapping[str, Any]) -> list[Symptom]:
        """One metrics line; the symptoms it completes (usually none)."""
        ctx = self.context
        ctx.lines += 1
        out: list[Symptom] = []
        t = rec.get("t")
        if type(t) is not float or t - t != 0.0:  # the common case is a finite float
            t = _finite(t)
        event = rec.get("event")
        if event is not None:
            if event == "start":  # a new attempt (a resume): the time before it is no stall
                self._last_t = t
            else:  # the gap is judged in the phase it happened in, before this event
                self._gap(t, None, out)
            self._on_event(event, rec, t)
            return self._new(out) if out else out
        step = rec.get("step")
        if type(step) is not int or not -(2**63) < step < 2**63:
            step = _count(step)
            if step is None:
                return out
        self._gap(t, step, out)
        ctx.step = step
        loss = grad = None
        keys = tuple(rec)
        plan = self._plans.get(keys)
        if plan is None:  # the metrics this shape of line holds, decided once per shape
            plan = tuple((k, kind) for k in keys if (kind := self._kind(k)) != "skip")
            if len(self._plans) < 64:
                self._plans[keys] = plan
        for key, kind in plan:
            raw = rec[key]
            value = raw if type(raw) is float else as_float(raw)
            if value is None:
                continue
            if value - value != 0.0:  # inf or nan (nan != nan, inf - inf is nan)
                if kind in ("loss", "grad", "eval_loss"):
                    self._nonfinite(key, value, step, t, out)
                continue
            if kind == "loss":
                loss = value
            elif kind == "grad":
                grad = value
            elif kind == "lr":
                self._on_lr(value)
            elif kind == "eval_loss":
                self._on_eval_loss(key, value, step, t, out)
            elif kind == "acc":
                self._on_accuracy(key, value, step, t, out)
            elif kind == "rate":
                self._on_rate(key, value, step, t, out)
        if loss is not None:
            self._on_loss(loss, step, t, out)
            c = self._loss_c
            if loss == c.last:  # only a repeat can be degenerate: the rest is inline
                self._degenerate("loss", loss, step, t, CONSTANT_LINES, out, c)
            else:
                c.varied = c.varied or c.last is not None
                c.streak.length, c.last = 0, loss
        if grad is not None:
            self._on_grad(grad, step, t, out)
            c = self._grad_c
            if grad == c.last:
                self._degenerate("grad_norm", grad, step, t, CONSTANT_LINES, out, c)
            else:
                c.varied = c.varied or c.last is not None
                c.streak.length, c.last = 0, grad
        return self._new(out) if out else out

    def _kind(self, key: str) -> str:
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kind_of(key) if isinstance(key, str) else "skip"
            if len(self._kinds) < 256:
                self._kinds[key] = kind
        return kind

    def _kind_of(self, key: str) -> str:
        """What a metric is to the detectors, decided once per name."""
        if key == "loss":
            return "loss"
        if key == "grad_norm":
            return "grad"
        if key == "lr":
            return "lr"
        if key in ("t", "step"):
            return "skip"
        if key in EVAL_LOSSES:
            return "eval_loss"
        if self._accuracy_like(key):
            return "acc"
        if key in THROUGHPUT:
            return "rate"
        return "skip"

    def feed_all(self, records: Iterable[Mapping[str, Any]]) -> list[Symptom]:
        out: list[Symptom] = []
        for rec in records:
            out += self.feed(rec)
        return out + self.close()

    def close(self) -> list[Symptom]:
        """The end of the stream: what only the whole run decides (a short run's progress)."""
        out: list[Symptom] = []
        ctx = self.context
        if self._loss_lines >= 50:
            self._progress(ctx.step, None, out, final=True)
        return self._new(out)

    def _new(self, symptoms: Sequence[Symptom]) -> list[Symptom]:
        fresh = []
        for s in symptoms:
            if s.symptom not in self.found:
                self.found[s.symptom] = s
                fresh.append(s)
        return fresh

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: Any, rec: Mapping[str, Any], t: float | None) -> None:
        ctx = self.context
        if event == "start":
            total = _count(rec.get("total_steps"))
            if total is not None and total > 0:
                ctx.total_steps = total
            resumed = _count(rec.get("resumed_from"))
            self._resumed = bool(resumed)
        elif event == "phase" and isinstance(rec.get("phase"), str):
            self._phase = rec["phase"][:64]
        elif event == "checkpoint":
            step = _count(rec.get("step"))
            path = rec.get("path")
            if step is not None and isinstance(path, str):
                ctx.checkpoints.append((step, path[:4096], ctx.lr_last))
        elif event == "controls" and isinstance(rec.get("applied"), Mapping):
            applied = rec["applied"]
            for key, value in list(applied.items())[:32]:
                if key == "lr":
                    after = _finite(value)
                    ctx.changes.append(Change("lr", ctx.step, t, ctx.lines, ctx.lr_last, after))
                    if after is not None:
                        self._lr_prev = after  # a controls change is not a schedule restart
                elif key in ("data_weights", "data_mix", "data"):
                    ctx.changes.append(Change("data", ctx.step, t, ctx.lines, None, value))
                else:
                    ctx.changes.append(Change("other", ctx.step, t, ctx.lines, key, value))

    def _on_lr(self, lr: float) -> None:
        ctx = self.context
        if ctx.lr_first is None:
            ctx.lr_first = lr
        ctx.lr_max = lr if ctx.lr_max is None else max(ctx.lr_max, lr)
        prev = self._lr_prev
        if prev is not None and prev > 0 and lr > prev * 1.5:
            self._restart_grace = SPIKE_RECOVER_LINES  # a schedule restart: loss may bump
        self._lr_prev = ctx.lr_last = lr

    def _warming(self) -> bool:
        """The first lr warmup: the lr still rising from its first value, no change reported."""
        ctx = self.context
        return (
            ctx.lr_first is not None
            and ctx.lr_last is not None
            and ctx.lr_max is not None
            and ctx.lr_last >= ctx.lr_max
            and ctx.lr_last > ctx.lr_first * 1.001
            and not ctx.changes
            and self._loss_lines < 10 * WARMUP_LINES
        )

    # -- detectors -------------------------------------------------------------------------

    def _nonfinite(
        self, key: str, x: float, step: int, t: float | None, out: list[Symptom]
    ) -> None:
        if self._nonfinite_step != step:  # lines, not values: loss and grad inf is one line
            self._nonfinite_step = step
            self.context.nonfinite_lines += 1
        if "nonfinite" not in self.found:
            out.append(Symptom("nonfinite", step, t, key, (f"{key} is {x} at step {step}",), {}))

    def _on_loss(self, x: float, step: int, t: float | None, out: list[Symptom]) -> None:
        ctx = self.context
        self._loss_lines += 1
        if len(self._first) < 5:
            self._first.append(x)
            ctx.loss_start = sum(self._first) / len(self._first)
        self._ema = x if self._ema is None else self._ema + EMA_ALPHA * (x - self._ema)
        self._level.add(x)
        self._spikes(x, step, t, out)
        if "divergence" not in self.found:
            self._divergence(step, t, out)
        if not self._progress_done and "no_progress" not in self.found:
            self._progress(step, t, out, final=False)

    def _spikes(self, x: float, step: int, t: float | None, out: list[Symptom]) -> None:
        if self._restart_grace > 0:
            self._restart_grace -= 1
        if self._spike is not None:
            s_step, s_t, value, mean, sigma, waited = self._spike
            value = max(value, x)  # the peak
            back = x <= mean + 2 * sigma or x <= mean + SPIKE_BACK * (value - mean)
            if back:
                ratio = value / mean if mean else math.inf
                out.append(
                    Symptom(
                        "loss_spike",
                        s_step,
                        s_t,
                        "loss",
                        (
                            f"loss {_fmt(value)} at step {s_step}, {ratio:.1f}x its running mean "
                            f"{_fmt(mean)} (sigma {_fmt(sigma)}); back to {_fmt(x)} by step {step}",
                        ),
                        {"loss": value, "mean": mean, "sigma": sigma, "recovered_step": step},
                    )
                )
                self._spike = None
            elif waited + 1 >= SPIKE_RECOVER_LINES:
                self._spike = None  # it did not come back: a shift, judged as divergence
            else:
                self._spike = (s_step, s_t, value, mean, sigma, waited + 1)
                return
        base, diffs = self._base, self._diffs
        lines = self._spike_lines
        # every spike is at least SPIKE_REL above the level: below that, nothing to weigh
        if lines >= 3 and base is not None and diffs.values and x - base > SPIKE_REL * abs(base):
            # the line-to-line noise (first differences: a falling trend is not noise)
            sigma = math.sqrt(diffs.sq / len(diffs.values) / 2)
            normal = lines >= WARMUP_LINES and self._restart_grace == 0 and not self._warming()
            # before a baseline, in the lr warmup or a schedule restart: only a gross spike
            falling = base <= self._first[0]  # it had not been rising since its first line
            gross = (
                not normal
                and falling
                and base > 0
                and x >= SPIKE_GROSS * base
                and x - base > 4 * sigma
            )
            if gross or (normal and x - base > max(SPIKE_SIGMA * sigma, SPIKE_REL * abs(base))):
                self._spike = (step, t, x, base, sigma, 0)
                return  # the spike stays out of its own baseline
        self._spike_lines = lines + 1
        if self._prev_ok is not None:
            diffs.add(x - self._prev_ok)
        self._prev_ok = x
        self._base = x if base is None else base + EMA_ALPHA * (x - base)

    def _divergence(self, step: int, t: float | None, out: list[Symptom]) -> None:
        """On the mean of the last lines (noise averages out), against its lowest."""
        ctx = self.context
        level = self._level
        n = len(level.values)
        if n < WARMUP_LINES or ctx.loss_start is None:
            return
        ema = level.sum / n
        if self._level_best is None or ema < self._level_best:
            self._level_best, self._best_at = ema, (step, t)
            if self._diverge.length:
                self._diverge.length = 0
            return  # a new lowest level: nothing rose
        start, best = ctx.loss_start, self._level_best
        progress = start - best
        lost = progress > 0.05 * abs(start) and ema > best + DIVERGE_LOST * progress
        risen = best > 0 and ema >= DIVERGE_RISE * best  # well above its lowest level
        blown = ema > DIVERGE_BLOWUP * abs(start) and start > 0
        if lost or risen or blown:
            # the level's own noise: a rise within 3 standard errors of the mean is noise
            noise = 3 * level.sigma() / math.sqrt(n)
            lost = lost and progress > noise
            if not (lost or risen or blown) or ema - best <= noise:
                self._diverge.miss()
                return
            if self._diverge.hit(step, t) >= DIVERGE_LINES:
                if blown:
                    why = f"smoothed loss {_fmt(ema)} is {ema / start:.1f}x its start {_fmt(start)}"
                elif lost:
                    why = (
                        f"smoothed loss fell from {_fmt(start)} to {_fmt(best)}, then rose to "
                        f"{_fmt(ema)}: {(ema - best) / progress * 100:.0f} % of the progress lost"
                    )
                else:
                    why = (
                        f"smoothed loss rose from its lowest {_fmt(best)} to {_fmt(ema)} "
                        f"({ema / best:.2f}x)"
                    )
                # the onset is where the loss turned: its lowest, unless it never fell
                onset = self._best_at if not blown else (self._diverge.step, self._diverge.t)
                out.append(
                    Symptom(
                        "divergence",
                        onset[0],
                        onset[1],
                        "loss",
                        (
                            f"{why}, for {self._diverge.length} lines from step "
                            f"{self._diverge.step}",
                        ),
                        {"start": start, "best": best, "now": ema},
                    )
                )
        else:
            self._diverge.miss()

    def _progress(
        self, step: int | None, t: float | None, out: list[Symptom], *, final: bool
    ) -> None:
        ctx = self.context
        if "no_progress" in self.found or self._progress_done or self._resumed or step is None:
            return
        start, ema = ctx.loss_start, self._ema
        if start is None or ema is None or start <= 0:
            return
        if not final:
            total = ctx.total_steps
            due = step >= PROGRESS_AT * total if total else self._loss_lines >= PROGRESS_LINES
            if not due or self._loss_lines < 50:
                return
        if ema >= (1 - PROGRESS_MIN) * start:
            done = (
                f" ({step / ctx.total_steps * 100:.0f} % of {ctx.total_steps} steps)"
                if ctx.total_steps
                else ""
            )
            out.append(
                Symptom(
                    "no_progress",
                    step,
                    t,
                    "loss",
                    (
                        f"smoothed loss {_fmt(ema)} at step {step}{done} against {_fmt(start)} "
                        f"at the start: {(1 - ema / start) * 100:.1f} % lower (less than "
                        f"{PROGRESS_MIN * 100:.0f} %)",
                    ),
                    {"start": start, "now": ema},
                )
            )
        else:
            self._progress_done = True  # judged once: it had made progress by then

    def _on_grad(self, g: float, step: int, t: float | None, out: list[Symptom]) -> None:
        med = self._grad
        if self._grad_watch is not None:  # the line after the first explosion
            self.context.grad_isolated = g < 3 * self._grad_watch
            self._grad_watch = None
        if 3 <= med.n < GRAD_MIN_VALUES:  # no baseline yet: only a gross jump counts
            m = med.median()
            if m > 0 and g >= GRAD_EXPLODE * m and g >= 2 * med.max():
                out.append(self._explosion(g, m, step, t))
        if med.n >= GRAD_MIN_VALUES:
            m = med.median()
            if self._grad_early is None and med.n >= GRAD_MIN_VALUES:
                self._grad_early = m
            early = self._grad_early or 0.0
            creep = self._creep
            if early > 0 and g >= GRAD_EXPLODE * early:  # grown 10x since early on
                creep.hit(step, t)
            elif creep.length:
                creep.length = 0
            if (m > 0 and g >= GRAD_EXPLODE * m) or creep.length >= GRAD_VANISH_LINES:
                out.append(self._explosion(g, m if g >= GRAD_EXPLODE * m else early, step, t))
            # 1000x below where it started, or tiny from the start while the loss is flat
            if g <= max(1e-8, GRAD_VANISH * early) or (g <= GRAD_TINY and self._flat()):
                if self._vanish.hit(step, t) >= GRAD_VANISH_LINES:
                    out.append(
                        Symptom(
                            "vanishing_gradient",
                            self._vanish.step,
                            self._vanish.t,
                            "grad_norm",
                            (
                                f"grad_norm {_fmt(g)} for {self._vanish.length} lines from step "
                                f"{self._vanish.step}, against {_fmt(early)} early in the run",
                            ),
                            {"grad_norm": g, "early": early},
                        )
                    )
            elif self._vanish.length:
                self._vanish.length = 0
        med.add(g)

    def _flat(self) -> bool:
        """The smoothed loss has not fallen 5 % from its start."""
        start, ema = self.context.loss_start, self._ema
        return start is not None and ema is not None and ema >= (1 - PROGRESS_MIN) * start

    def _explosion(self, g: float, m: float, step: int, t: float | None) -> Symptom:
        if "grad_explosion" not in self.found and self.context.grad_isolated is None:
            self._grad_watch = m
        return Symptom(
            "grad_explosion",
            step,
            t,
            "grad_norm",
            (f"grad_norm {_fmt(g)} at step {step}, {g / m:.0f}x its running median {_fmt(m)}",),
            {"grad_norm": g, "median": m},
        )

    def _accuracy_like(self, key: str) -> bool:
        if key in self.gated_up:
            return True
        low = key.lower()
        return any(h in low for h in ACCURACY_HINTS) and not any(n in low for n in _NOT_ACCURACY)

    def _on_accuracy(
        self, key: str, x: float, step: int, t: float | None, out: list[Symptom]
    ) -> None:
        best = self._best.get(key)
        if x not in (1.0, 100.0):  # a solved task sits at the maximum: not degenerate
            self._degenerate(key, x, step, t, CONSTANT_EVALS, out)
        if best is None or x > best:
            self._best[key] = x
            self._low.pop(key, None)
            return
        drop = best - x
        if drop >= max(COLLAPSE_REL * abs(best), COLLAPSE_ABS if abs(best) <= 1.0 else 5.0):
            first = self._low.get(key)
            if first is None:
                self._low[key] = (step, t, x)
                return
            f_step, f_t, f_x = first
            out.append(
                Symptom(
                    "metric_collapse",
                    f_step,
                    f_t,
                    key,
                    (
                        f"{key} fell from its best {_fmt(best)} to {_fmt(f_x)} at step {f_step} "
                        f"and is {_fmt(x)} at step {step} ({drop / abs(best) * 100:.0f} % below)",
                    ),
                    {"best": best, "first": f_x, "now": x},
                )
            )
        else:
            self._low.pop(key, None)

    def _on_eval_loss(
        self, key: str, x: float, step: int, t: float | None, out: list[Symptom]
    ) -> None:
        self._degenerate(key, x, step, t, CONSTANT_EVALS, out)
        series = self._eval_loss.setdefault(key, deque(maxlen=OVERFIT_EVALS + 1))
        series.append((step, x, self._ema))
        if len(series) < OVERFIT_EVALS + 1:
            return
        values = [v for _, v, _ in series]
        rising = all(b > a for a, b in pairwise(values))
        low = values[0]
        train = [e for _, _, e in series]
        falling = train[0] is not None and train[-1] is not None and train[-1] < train[0]
        if rising and low > 0 and values[-1] >= low * (1 + OVERFIT_RISE) and falling:
            onset = series[0][0]
            out.append(
                Symptom(
                    "overfitting",
                    onset,
                    t,
                    key,
                    (
                        f"{key} rose at {OVERFIT_EVALS} evals in a row, from {_fmt(low)} at step "
                        f"{onset} to {_fmt(values[-1])} at step {step}, while the smoothed train "
                        f"loss fell from {_fmt(train[0] or 0)} to {_fmt(train[-1] or 0)}",
                    ),
                    {"eval_low": low, "eval_now": values[-1]},
                )
            )

    def _degenerate(
        self,
        key: str,
        x: float,
        step: int,
        t: float | None,
        need: int,
        out: list[Symptom],
        c: _Constant | None = None,
    ) -> None:
        if c is None:
            c = self._constant.get(key)
        if c is None:
            if len(self._constant) >= 64:
                return
            c = self._constant[key] = _Constant()
        if c.last is not None and x == c.last:
            if c.varied and c.streak.hit(step, t) + 1 >= need:
                out.append(
                    Symptom(
                        "degenerate_metric",
                        c.streak.step,
                        c.streak.t,
                        key,
                        (
                            f"{key} is exactly {x!r} for {c.streak.length + 1} "
                            f"{'evals' if need == CONSTANT_EVALS else 'lines'} in a row from step "
                            f"{c.streak.step}, after it had varied",
                        ),
                        {key: x, "repeats": c.streak.length + 1},
                    )
                )
        else:
            if c.last is not None:
                c.varied = True
            c.streak.miss()
        c.last = x

    def _on_rate(self, key: str, x: float, step: int, t: float | None, out: list[Symptom]) -> None:
        if x <= 0:
            return
        self._rate_values += 1
        self._rate_ema = (
            x if self._rate_ema is None else self._rate_ema + 0.2 * (x - self._rate_ema)
        )
        if self._rate_values >= 5:
            self._rate_best = max(self._rate_best, self._rate_ema)
        best = self._rate_best
        if best > 0 and self._rate_ema <= THROUGHPUT_DROP * best:
            if self._slow.hit(step, t) >= THROUGHPUT_LINES:
                out.append(
                    Symptom(
                        "throughput_drop",
                        self._slow.step,
                        self._slow.t,
                        key,
                        (
                            f"{key} down to {_fmt(self._rate_ema)} (smoothed) from its best "
                            f"{_fmt(best)}: {(1 - self._rate_ema / best) * 100:.0f} % lower for "
                            f"{self._slow.length} lines from step {self._slow.step}",
                        ),
                        {"best": best, "now": self._rate_ema},
                    )
                )
        else:
            self._slow.miss()

    def _gap(self, t: float | None, step: int | None, out: list[Symptom]) -> None:
        if t is None:
            return
        last = self._last_t
        self._last_t = t
        at = self._last_step  # the gap followed the last step line before this one
        if step is not None:
            self._last_step = step
        if last is None or t < last or self._phase != "train":
            return
        gap = t - last
        usual = self._gap_ema
        if (
            usual is not None
            and self._gaps_seen >= 10
            and gap >= STALL_GAP_S
            and gap >= STALL_GAP_X * max(usual, 1e-3)
            and "stall" not in self.found
        ):
            out.append(
                Symptom(
                    "stall",
                    at,
                    last,
                    "t",
                    (
                        f"no line for {gap:.0f} s after step {at} (lines came every "
                        f"{usual:.2g} s), in the train phase",
                    ),
                    {"gap_s": gap, "usual_s": usual},
                )
            )
            return  # the stall is not the usual gap
        self._gaps_seen += 1
        self._gap_ema = gap if usual is None else usual + 0.05 * (gap - usual)

    @property
    def symptoms(self) -> list[Symptom]:
        """Everything found so far, in order of onset."""
        return sorted(self.found.values(), key=lambda s: (s.step is None, s.step or 0))
