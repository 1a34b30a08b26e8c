"""What the Lightning and Hugging Face callbacks share: the job protocol for one fit, live
controls, the learning rate that survives a scheduler, and the checks at fit start.

No framework is imported here; ``harness.job.lightning`` and ``harness.job.hf`` adapt
their hooks to :class:`JobLink`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from harness.job.checks import (
    CheckConfig,
    CheckResult,
    LossFn,
    RunFacts,
    raise_on_fail,
    run_checks,
)
from harness.job.report import Reporter

__all__ = [
    "ControlRejected",
    "JobLink",
    "broadcast",
    "grad_norm",
    "positive_lr",
    "set_lr",
    "step_count",
]


class ControlRejected(ValueError):
    """A live control's value the job will not apply; the old value stays."""


def positive_lr(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ControlRejected(f"lr must be a positive finite number, got {value!r}")
    return float(value)


def step_count(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ControlRejected(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _schedulers(items: Iterable[Any]) -> list[Any]:
    """The schedulers themselves: wrappers (accelerate's ``.scheduler``) and chains
    (``SequentialLR``, ``ChainedScheduler``) opened up."""
    found: list[Any] = []
    for s in items:
        if s is None:
            continue
        inner = getattr(s, "scheduler", None)
        if inner is not None and not hasattr(s, "base_lrs"):
            found += _schedulers([inner])
            continue
        found.append(s)
        found += _schedulers(getattr(s, "_schedulers", ()))
    return found


def set_lr(optimizers: Sequence[Any], schedulers: Iterable[Any], lr: float) -> float:
    """Make ``lr`` the base learning rate from now on; returns the scale applied.

    ``lr`` replaces the base rate of the first optimizer's first parameter group (the rate
    it was built with, before any schedule); every group of every optimizer is scaled by
    the same factor, so their ratios stay. A scheduler keeps its shape: its ``base_lrs``
    (LambdaLR, and so Hugging Face's schedules, recompute the rate from them every step)
    and the groups' ``initial_lr``/``max_lr``/``min_lr`` (OneCycleLR) scale too, so the
    current rate is the new base times the schedule's factor at this step.
    """
    if not optimizers or not optimizers[0].param_groups:
        raise ControlRejected("no optimizer to set lr on")
    scheds = _schedulers(schedulers)
    first = optimizers[0].param_groups[0]
    ref = None
    for s in scheds:
        if getattr(s, "optimizer", None) is optimizers[0] and getattr(s, "base_lrs", None):
            ref = float(s.base_lrs[0])
            break
    if ref is None:
        ref = float(first.get("initial_lr", first["lr"]))
    if not ref > 0:
        raise ControlRejected(f"the optimizer's base lr is {ref}: cannot scale it")
    factor = lr / ref
    for s in scheds:
        # max_lrs: CyclicLR; _last_lr: what get_last_lr() (the Trainer's logged rate) says
        for attr in ("base_lrs", "max_lrs", "_last_lr"):
            values = getattr(s, attr, None)
            if isinstance(values, list):
                setattr(s, attr, [v * factor for v in values])
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["lr"] * factor
            for key in ("initial_lr", "max_lr", "min_lr"):
                if isinstance(group.get(key), int | float):
                    group[key] = group[key] * factor
    return factor


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> float | None:
    """The total L2 norm of the gradients (None before any)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return None
    device = grads[0].device
    norms = [torch.linalg.vector_norm(g.float()).to(device) for g in grads]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank of an initialised process group (else ``value``):
    every rank applies the same control at the same step, or their weights drift apart."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class JobLink:
    """The job protocol for one fit, rank-aware.

    Rank 0 writes the main stream (start, phases, steps, checkpoints, controls, alerts,
    end); another rank writes only its step lines, to its own ``metrics.rank<R>.jsonl``.
    Outside the harness (no ``HARNESS_METRICS``) :attr:`enabled` is false and the
    callbacks return at once from every hook.
    """

    def __init__(self, reporter: Reporter | None) -> None:
        self._own = reporter is None
        self.reporter = reporter if reporter is not None else Reporter()
        self.enabled = self.reporter.enabled
        self.main = self.reporter.rank == 0
        self.phase_now: str | None = None
        self._seen: dict[str, Any] = {}

    def set_rank(self, rank: int) -> None:
        """The framework's global rank (a launcher other than torchrun may not set RANK)."""
        if self._own and rank != self.reporter.rank:
            self.reporter.close()
            self.reporter = Reporter(environ={**os.environ, "RANK": str(rank)})
        self.main = rank == 0

    # -- the stream -------------------------------------------------------------------

    def start(self, *, total_steps: int, device: str, **extra: Any) -> None:
        if self.main:
            self.reporter.start(total_steps=total_steps, device=device, **extra)

    def phase(self, name: str) -> None:
        if self.main and name != self.phase_now:
            self.reporter.phase(name)
            self.phase_now = name

    def step(self, step: int, **metrics: Any) -> None:
        self.reporter.step(step, **{k: v for k, v in metrics.items() if v is not None})

    def checkpoint(self, path: str | os.PathLike[str], step: int) -> None:
        if self.main:
            self.reporter.checkpoint(path, step)

    def end(self, **final: Any) -> None:
        if self.main:
            self.reporter.end(**final)

    # -- live controls ----------------------------------------------------------------

    def controls(
        self,
        handlers: Mapping[str, Callable[[Any], Any]],
        unsupported: Mapping[str, str],
        share: Callable[[Any], Any] = broadcast,
    ) -> dict[str, Any]:
        """Apply the controls that changed since the last call; returns what was applied.

        Rank 0 reads ``controls.json`` (a stat per call, a read when it changed) and
        ``share`` hands it to every rank. A value already handled is not handled again, so
        an unchanged bad value is rejected once. A rejected value leaves the old one.
        """
        new = share(self.reporter.controls() if self.main else None)
        if not new:
            return {}
        applied: dict[str, Any] = {}
        rejected: dict[str, str] = {}
        for key, value in new.items():
            if key in self._seen and self._seen[key] == value:
                continue
            self._seen[key] = value
            if key in handlers:
                try:
                    applied[key] = handlers[key](value)
                except ControlRejected as exc:
                    rejected[key] = str(exc)
            elif key in unsupported:
                rejected[key] = unsupported[key]
        if self.main:
            for key, reason in rejected.items():
                print(f"harness: control {key} rejected: {reason}", file=sys.stderr, flush=True)
            if applied or rejected:
                self.reporter.applied(applied, **({"rejected": rejected} if rejected else {}))
        return applied

    # -- checks at fit start ----------------------------------------------------------

    def fit_start_checks(
        self,
        model: torch.nn.Module,
        batch: Callable[[], Any],
        loss_fn: LossFn | None,
        config: CheckConfig,
        *,
        tokenizer: Any = None,
        facts: RunFacts | None = None,
    ) -> list[CheckResult]:
        """The model checks on rank 0 before the first step; :class:`ChecksFailed` when
        one fails and ``config.on_fail`` is ``"abort"``. ``batch`` is called only when a
        check will run."""
        if not self.main or config.checks == ():
            return []
        results = run_checks(
            model,
            batch(),
            loss_fn,
            config=config,
            tokenizer=tokenizer,
            facts=facts,
            reporter=self.reporter,
        )
        raise_on_fail(results, config.on_fail)
        return results
