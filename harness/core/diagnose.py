"""The diagnosis: symptoms, their ranked causes with confidences and fixes, quick wins.

Pure: :func:`diagnose` takes what :class:`~harness.core.detectors.Detectors` found and the
context it kept (controls and data changes, checkpoints, the lr) and returns a
:class:`Diagnosis`, as the JSON ``harness diagnose --json`` prints (:meth:`Diagnosis.to_json`)
and as a short report a person acts on (:meth:`Diagnosis.render_text`). How each cause is
weighed is in ``docs/diagnosis.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.core.detectors import SYMPTOMS, Change, Context, Detectors, Symptom
from harness.core.spec import parse_gate
from mistakes import RULE_LINKS

__all__ = [
    "SYMPTOM_MISTAKES",
    "CauseView",
    "Diagnosis",
    "FindingView",
    "card",
    "card_embed",
    "diagnose",
    "explain",
    "gated_up",
]

#: the catalogue's mistakes each symptom is a case of: the rules' links (one table,
#: ``mistakes.RULE_LINKS``, which also links the incidents a live finding records)
SYMPTOM_MISTAKES: dict[str, tuple[str, ...]] = {s: RULE_LINKS.get(s, ()) for s in SYMPTOMS}

_WHAT = {
    "nonfinite": "a non-finite loss or gradient",
    "loss_spike": "a loss spike that recovered",
    "divergence": "the loss diverged",
    "no_progress": "the loss is not falling",
    "grad_explosion": "the gradient norm exploded",
    "vanishing_gradient": "the gradients vanished",
    "metric_collapse": "an eval metric collapsed",
    "overfitting": "overfitting: eval loss rising while train loss falls",
    "degenerate_metric": "a metric stuck at one exact value",
    "throughput_drop": "throughput dropped and stayed down",
    "stall": "the job went silent while training",
}
# symptoms an lr raised just before explains, and how strongly
_LR_SENSITIVE = {
    "divergence": 0.9,
    "loss_spike": 0.8,
    "grad_explosion": 0.9,
    "nonfinite": 0.85,
    "metric_collapse": 0.85,
    "no_progress": 0.4,
    "degenerate_metric": 0.5,
    "vanishing_gradient": 0.7,
}
_DATA_SENSITIVE = {
    "metric_collapse": 0.9,
    "loss_spike": 0.75,
    "divergence": 0.75,
    "throughput_drop": 0.6,
    "degenerate_metric": 0.5,
    "overfitting": 0.4,
    "no_progress": 0.4,
}


@dataclass(frozen=True)
class CauseView:
    rank: int
    cause: str
    confidence: float
    evidence: tuple[str, ...]
    fix: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "cause": self.cause,
            "confidence": round(self.confidence, 2),
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


@dataclass(frozen=True)
class FindingView:
    symptom: str
    step: int | None
    severity: str
    evidence: tuple[str, ...]
    mistakes: tuple[str, ...]
    causes: tuple[CauseView, ...]
    metric: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "symptom": self.symptom,
            "step": self.step,
            "severity": self.severity,
            "evidence": list(self.evidence),
            "mistakes": list(self.mistakes),
            "causes": [c.to_json() for c in self.causes],
        }

    @property
    def headline(self) -> str:
        """``divergence at step 612 (critical): lr_change 0.9``: one line for alerts."""
        at = f" at step {self.step}" if self.step is not None else ""
        top = (
            f": likely {self.causes[0].cause} ({self.causes[0].confidence:.0%})"
            if self.causes
            else ""
        )
        return f"{_WHAT.get(self.symptom, self.symptom)}{at} ({self.severity}){top}"


@dataclass(frozen=True)
class Diagnosis:
    findings: tuple[FindingView, ...]
    quick_wins: tuple[str, ...]
    lines: int = 0

    @property
    def verdict(self) -> str:
        return "unhealthy" if self.findings else "healthy"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "findings": [f.to_json() for f in self.findings],
            "quick_wins": list(self.quick_wins),
        }

    def render_text(self, *, name: str = "") -> str:
        """The report: a verdict, each finding with its evidence and ranked causes, wins."""
        head = f"{name}: " if name else ""
        if not self.findings:
            return f"{head}healthy: no symptom in {self.lines} lines\n"
        out = [f"{head}unhealthy: {len(self.findings)} finding(s) in {self.lines} lines", ""]
        for i, f in enumerate(self.findings, 1):
            links = f" [{', '.join(f.mistakes)}]" if f.mistakes else ""
            out.append(f"{i}. {f.headline}{links}")
            out += [f"   - {e}" for e in f.evidence]
            for c in f.causes:
                out.append(f"   {c.rank}) {c.cause} ({c.confidence:.0%}): {c.fix}")
                out += [f"      - {e}" for e in c.evidence]
            out.append("")
        if self.quick_wins:
            out.append("Quick wins:")
            out += [f"  - {w}" for w in self.quick_wins]
        return "\n".join(out).rstrip() + "\n"


def gated_up(gates: Mapping[str, Any]) -> list[str]:
    """Metrics a spec gates from below (``>= 0.93``): accuracy-like, whatever their name."""
    out = []
    for metric, expr in gates.items():
        try:
            gate = parse_gate(metric, str(expr))
        except ValueError:
            continue
        if gate.op in (">=", ">"):
            out.append(metric)
    return out


def _lookback(s: Symptom, ctx: Context) -> int:
    """How many steps before an onset a change counts as "shortly before"."""
    step = s.step or 0
    total = ctx.total_steps or 0
    return max(100, int(0.1 * step), int(0.05 * total))


def _recent(s: Symptom, ctx: Context, kind: str) -> Change | None:
    """The last change of ``kind`` at or before the onset, within the look-back."""
    if s.step is None:
        return None
    window = _lookback(s, ctx)
    found = None
    for c in ctx.changes:
        if c.kind == kind and c.step is not None and s.step - window <= c.step <= s.step:
            found = c
    return found


def _checkpoint_before(step: int | None, ctx: Context) -> tuple[int, str] | None:
    if step is None:
        return None
    best = None
    for s, path, _ in ctx.checkpoints:
        if s < step:
            best = (s, path)
    return best


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _resume(ctx: Context, step: int | None) -> str:
    ckpt = _checkpoint_before(step, ctx)
    return f"resume from the checkpoint at step {ckpt[0]} ({ckpt[1]})" if ckpt else ""


def explain(s: Symptom, ctx: Context, others: Iterable[Symptom] = ()) -> FindingView:
    """One symptom with its causes, ranked, each with evidence and a fix.

    ``others`` are the run's other symptoms (an explosion before a NaN says lr_too_high).
    """
    before = {
        o.symptom
        for o in others
        if o.step is not None and s.step is not None and o.step <= s.step and o is not s
    }
    scored: list[tuple[float, str, tuple[str, ...], str]] = []
    resume = _resume(ctx, s.step)
    then = f", then {resume}" if resume else ""
    lr = _recent(s, ctx, "lr")
    if lr is not None and s.symptom in _LR_SENSITIVE:
        raised = (
            isinstance(lr.before, float)
            and isinstance(lr.after, float)
            and lr.before > 0
            and lr.after > lr.before
        )
        lowered = (
            isinstance(lr.before, float) and isinstance(lr.after, float) and lr.after < lr.before
        )
        # raised: the usual culprit; lowered: rarely; unknown direction: still suspect
        confidence = _LR_SENSITIVE[s.symptom] if raised else (0.3 if lowered else 0.7)
        factor = f" ({lr.after / lr.before:.3g}x)" if raised else ""
        evidence = (
            f"lr changed from {_fmt(lr.before)} to {_fmt(lr.after)}{factor} at step {lr.step}, "
            f"{(s.step or 0) - (lr.step or 0)} steps before the onset",
        )
        fix = (
            f"set lr back to {_fmt(lr.before)}{then}"
            if lr.before is not None
            else f"lower lr{then}"
        )
        scored.append((confidence, "lr_change", evidence, fix))
    data = _recent(s, ctx, "data")
    if data is not None and s.symptom in _DATA_SENSITIVE:
        evidence = (
            f"the data mix changed to {_short(data.after)} at step {data.step}, "
            f"{(s.step or 0) - (data.step or 0)} steps before the onset",
        )
        fix = (
            f"restore the previous data mix{then}; bring new data in gradually, mixed with the old"
        )
        scored.append((_DATA_SENSITIVE[s.symptom], "data_change", evidence, fix))
    changed = lr is not None or data is not None
    if s.symptom == "loss_spike" and not changed:
        scored.append(
            (
                0.7,
                "bad_batch",
                ("an isolated spike that recovered, with no lr or data change before it",),
                f"look at the batch at step {s.step} (bad samples, a mislabeled shard); "
                "gradient clipping stops one batch from moving the weights far",
            )
        )
    isolated = (s.symptom == "nonfinite" and ctx.nonfinite_lines == 1) or (
        s.symptom == "grad_explosion" and ctx.grad_isolated is True
    )
    if isolated and not changed:
        scored.append(
            (
                0.65,
                "bad_batch",
                (f"one line with {s.metric} out of line at step {s.step}, normal after it",),
                f"look at the batch at step {s.step}; clip gradients so one batch cannot "
                "move the weights far",
            )
        )
    if s.symptom in ("divergence", "grad_explosion", "nonfinite", "loss_spike") and lr is None:
        high = ctx.lr_max is not None and ctx.lr_first is not None
        evidence = (
            (f"lr {_fmt(ctx.lr_last)} (peak {_fmt(ctx.lr_max)}) with no change before the onset",)
            if high
            else ("no lr or data change before the onset",)
        )
        early = (
            s.step is not None and bool(ctx.total_steps) and s.step <= 0.3 * (ctx.total_steps or 0)
        )
        first = s.step is not None and ctx.lines and s.step <= 5  # broken from the very start
        if "grad_explosion" in before and s.symptom == "nonfinite":
            confidence = 0.7  # the gradients grew until they overflowed
        elif first or isolated:
            confidence = 0.2  # a broken input or init, or one bad batch
        elif s.symptom == "loss_spike":
            confidence = 0.3
        else:
            confidence = 0.6 if early else 0.3
        now = f" (now {_fmt(ctx.lr_last)})" if ctx.lr_last is not None else ""
        scored.append(
            (
                confidence,
                "lr_too_high",
                evidence,
                f"lower lr 2-10x{now}, with warmup and gradient clipping{then}",
            )
        )
    if s.symptom == "overfitting":
        scored.append(
            (
                0.75,
                "overfit_small_data",
                ("train loss keeps falling while eval loss rises: the model memorises",),
                f"stop at the best eval (step {s.step}): early stopping, more data, "
                "augmentation or regularisation (weight decay, dropout)",
            )
        )
    if s.symptom == "degenerate_metric":
        scored.append(
            (
                0.35,
                "overfit_small_data",
                ("one exact value over and over: the model may give one output for every input",),
                "check the model's outputs on a few inputs; sample the data more evenly",
            )
        )
    top = max((c[0] for c in scored), default=0.0)
    scored.append(
        (
            max(0.1, round(1.0 - top, 2)) if scored else 0.5,
            "unknown",
            ("nothing in the run's changes explains it",) if not scored else (),
            _generic_fix(s),
        )
    )
    scored.sort(key=lambda c: -c[0])
    causes = tuple(
        CauseView(i, cause, min(max(conf, 0.0), 1.0), ev, fix)
        for i, (conf, cause, ev, fix) in enumerate(scored, 1)
    )
    return FindingView(
        s.symptom,
        s.step,
        s.severity,
        s.evidence,
        SYMPTOM_MISTAKES.get(s.symptom, ()),
        causes,
        s.metric,
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _generic_fix(s: Symptom) -> str:
    return {
        "nonfinite": "lower lr, clip gradients, check the data for bad values",
        "loss_spike": "clip gradients; if spikes repeat, lower lr",
        "divergence": "resume from a checkpoint before the onset with a lower lr",
        "no_progress": "check that every parameter gets a gradient (a frozen or detached part), "
        "then the lr and the data pipeline",
        "grad_explosion": "clip gradients and lower lr",
        "vanishing_gradient": "check for frozen or detached parameters, the init and the lr",
        "metric_collapse": "resume from the checkpoint at the best eval; find what changed",
        "overfitting": "early stopping, more data or regularisation",
        "degenerate_metric": "check the model's outputs: one output for every input",
        "throughput_drop": "check the data loader, other load on the machine, thermal limits",
        "stall": "check the job's stack (a dead data loader, a hung collective, I/O)",
    }.get(s.symptom, "look at the run around the onset")


def _quick_wins(findings: Sequence[FindingView]) -> tuple[str, ...]:
    wins: list[str] = []
    for f in findings:
        top = f.causes[0] if f.causes else None
        if top is None:
            continue
        if top.cause in ("lr_change", "lr_too_high", "data_change"):
            wins.append(top.fix[0].upper() + top.fix[1:])
        if f.symptom in ("grad_explosion", "loss_spike", "nonfinite"):
            wins.append("Clip gradients (max norm 1.0)")
        if f.symptom in ("overfitting", "metric_collapse") and f.step is not None:
            wins.append(f"Keep the checkpoint from before step {f.step}; enable early stopping")
    seen: list[str] = []
    for w in wins:
        if w not in seen:
            seen.append(w)
    return tuple(seen[:5])


def diagnose(found: Detectors | Iterable[Symptom], context: Context | None = None) -> Diagnosis:
    """The diagnosis of what a run's detectors found (feed them first, then close them)."""
    if isinstance(found, Detectors):
        symptoms, ctx = found.symptoms, found.context
    else:
        symptoms, ctx = list(found), context or Context()
    order = {"critical": 0, "warn": 1, "info": 2}
    views = sorted(
        (explain(s, ctx, symptoms) for s in symptoms),
        key=lambda f: (order.get(f.severity, 3), f.step if f.step is not None else 0),
    )
    return Diagnosis(tuple(views), _quick_wins(views), ctx.lines)


def card(view: FindingView) -> str:
    """The diagnosis of one finding as an alert: the headline, the evidence, the top cause."""
    lines = [f"diagnosis: {view.headline}"]
    lines += [f"- {e}" for e in view.evidence[:2]]
    if view.causes:
        top = view.causes[0]
        lines.append(f"cause: {top.cause} ({top.confidence:.0%}): {top.fix}")
        lines += [f"- {e}" for e in top.evidence[:2]]
    if view.mistakes:
        lines.append(f"see {', '.join(view.mistakes)} (harness mistakes show ID)")
    return "\n".join(lines)


_CARD_COLOUR = {"critical": 0xE74C3C, "warn": 0xE67E22, "info": 0x95A5A6}


def card_embed(name: str, view: FindingView) -> dict[str, Any]:
    """The card as a Discord embed: the finding, its evidence, its ranked causes."""
    causes = [
        {
            "name": f"{c.rank}) {c.cause} ({c.confidence:.0%})"[:256],
            "value": (c.fix + "".join(f"\n- {e}" for e in c.evidence[:2]))[:1024],
            "inline": False,
        }
        for c in view.causes[:3]
    ]
    mistakes = f"\nsee {', '.join(view.mistakes)}" if view.mistakes else ""
    return {
        "title": f"{name}: {view.headline}"[:256],
        "description": ("\n".join(f"- {e}" for e in view.evidence[:3]) + mistakes)[:4096],
        "color": _CARD_COLOUR.get(view.severity, 0xE67E22),
        "fields": causes,
    }
