"""Model checks: catch a past mistake before a run spends hours on it.

Call one directly::

    from harness.job import checks

    r = checks.check_gradient_flow(model, batch, loss_fn)   # loss_fn(model, batch) -> loss
    print(r.line())        # "FAIL gradient_flow: 2 of 14 trainable parameters cannot learn: ..."

or several at once (``run_checks`` prints each line and, under the harness, raises each
FAIL as the job's own alert: a Discord message at once and an incident)::

    results = checks.run_checks(model, batch, loss_fn, config=checks.CheckConfig(seq_len=512))

The lines are the preflight protocol's (``PASS name: evidence`` / ``FAIL name: evidence``),
so a spec's ``preflight`` command may print them too. The checks and their mistakes:

==================  ============  ===========================================================
``gradient_flow``   M-032         every trainable parameter gets a finite non-zero gradient
``vocab_size``      M-026         token ids and vocabulary fit the embedding and output layer
``truncation``      M-008         samples longer than ``seq_len``
``loss_weighting``  M-002         positions weighted unequally without ``weighted=True``
``gradient_check``  M-001, M-009  autograd against float64 central differences (opt-in)
``padding_side``    M-003         rows padded on the wrong side (decoders: right)
``data_passes``     M-011         steps x batch >= ``min_passes`` x unique samples (opt-in)
==================  ============  ===========================================================

The framework callbacks (``harness.job.lightning``, ``harness.job.hf``) run them at fit
start with a :class:`CheckConfig`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from torch import nn

from harness.job._check_base import (
    MISTAKES,
    CheckError,
    CheckResult,
    ChecksFailed,
    LossFn,
    attention_mask_of,
    find_embedding,
    find_output,
    token_tensors,
)
from harness.job._data_checks import (
    check_data_passes,
    check_padding_side,
    check_truncation,
    check_vocab_size,
)
from harness.job._grad_checks import (
    check_gradient_check,
    check_gradient_flow,
    check_loss_weighting,
)
from harness.job.report import Reporter

__all__ = [
    "CHECKS",
    "MISTAKES",
    "CheckConfig",
    "CheckError",
    "CheckResult",
    "ChecksFailed",
    "LossFn",
    "RunFacts",
    "check_data_passes",
    "check_gradient_check",
    "check_gradient_flow",
    "check_loss_weighting",
    "check_padding_side",
    "check_truncation",
    "check_vocab_size",
    "raise_on_fail",
    "report",
    "run_checks",
]

#: every check, in the order they run
CHECKS = tuple(MISTAKES)
#: what runs when a config names none: each of these that applies (gradient_check, which
#: costs two forward passes per scalar, runs only when named)
DEFAULT_CHECKS = tuple(c for c in CHECKS if c != "gradient_check")
ON_FAIL = ("abort", "warn")
_RUNS_MODEL = frozenset({"gradient_flow", "loss_weighting", "gradient_check"})


@dataclass(frozen=True)
class CheckConfig:
    """Which checks run at fit start, what they compare against, and what a FAIL does.

    ``checks=None`` runs every default check that applies to the model and batch (one
    with nothing to judge is skipped with a note); named checks must run (a check that
    cannot judge its inputs raises :class:`CheckError`); ``()`` runs none. ``on_fail``:
    ``"abort"`` (the callback raises :class:`ChecksFailed` before the first step) or
    ``"warn"`` (the FAIL lines and alerts go out, training goes on).
    """

    checks: tuple[str, ...] | None = None
    on_fail: str = "abort"
    vocab_size: int | None = None
    vocab_output: bool = True  # False: the output layer is not over the vocabulary
    seq_len: int | None = None  # None: the model config's n_positions / max_position_embeddings
    causal: bool | None = None  # None: a Hugging Face model says (can_generate, not seq2seq)
    weighted: bool = False  # the loss weights positions unequally on purpose
    weight_tolerance: float = 1.05
    gradient_tolerance: float = 1e-2
    min_passes: float | None = None

    def __post_init__(self) -> None:
        if self.checks is not None:
            object.__setattr__(self, "checks", tuple(self.checks))
            unknown = [c for c in self.checks if c not in CHECKS]
            if unknown:
                raise ValueError(
                    f"checks: unknown check {unknown[0]!r} (known: {', '.join(CHECKS)})"
                )
        if self.on_fail not in ON_FAIL:
            raise ValueError(f"on_fail: expected one of {', '.join(ON_FAIL)}, got {self.on_fail!r}")
        for key in ("vocab_size", "seq_len"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{key}: must be a positive integer, got {value!r}")
        if not _number(self.weight_tolerance) or self.weight_tolerance <= 1:
            raise ValueError(
                f"weight_tolerance: must be a number > 1, got {self.weight_tolerance!r}"
            )
        if not _number(self.gradient_tolerance) or self.gradient_tolerance <= 0:
            raise ValueError(
                f"gradient_tolerance: must be a number > 0, got {self.gradient_tolerance!r}"
            )
        if self.min_passes is not None and (not _number(self.min_passes) or self.min_passes <= 0):
            raise ValueError(f"min_passes: must be a number > 0, got {self.min_passes!r}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RunFacts:
    """What a framework knows about the run: for ``data_passes``."""

    steps: int | None = None  # optimiser steps of the whole run
    batch_size: int | None = None  # samples per optimiser step, all ranks and accumulation
    unique_samples: int | None = None  # len(dataset)


def _model_seq_len(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _model_causal(model: nn.Module) -> bool | None:
    can_generate = getattr(model, "can_generate", None)
    config = getattr(model, "config", None)
    if not callable(can_generate) or config is None:
        return None
    try:
        return bool(can_generate()) and not getattr(config, "is_encoder_decoder", False)
    except Exception:  # a model that cannot say is not a decoder we know of
        return None


def run_checks(
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn | None = None,
    *,
    config: CheckConfig | None = None,
    tokenizer: Any = None,
    facts: RunFacts | None = None,
    reporter: Reporter | None = None,
    out: TextIO | None = None,
) -> list[CheckResult]:
    """Run the configured checks on one batch; print each line (and alert each FAIL)."""
    cfg = config if config is not None else CheckConfig()
    facts = facts if facts is not None else RunFacts()
    stream = out if out is not None else sys.stdout
    ids, _ = token_tensors(batch)
    mask = attention_mask_of(batch)
    seq_len = cfg.seq_len if cfg.seq_len is not None else _model_seq_len(model)
    causal = cfg.causal if cfg.causal is not None else _model_causal(model)
    has_embedding = find_embedding(model) is not None

    def need_loss() -> LossFn:
        if loss_fn is None:
            raise CheckError("no loss function: pass loss_fn(model, batch) -> loss")
        return loss_fn

    def need(value: Any, what: str) -> Any:
        if value is None:
            raise CheckError(what)
        return value

    runs: dict[str, tuple[bool, Callable[[], CheckResult]]] = {
        "gradient_flow": (
            loss_fn is not None,
            lambda: check_gradient_flow(model, batch, need_loss()),
        ),
        "vocab_size": (
            has_embedding
            and (ids is not None or cfg.vocab_size is not None or tokenizer is not None),
            lambda: check_vocab_size(
                model,
                batch,
                vocab_size=cfg.vocab_size,
                tokenizer=tokenizer,
                output=cfg.vocab_output,
            ),
        ),
        "truncation": (
            seq_len is not None and (ids is not None or mask is not None),
            lambda: check_truncation(
                batch if mask is not None or ids is None else ids,
                need(seq_len, "truncation: no seq_len (give CheckConfig(seq_len=...))"),
            ),
        ),
        "loss_weighting": (
            loss_fn is not None and has_embedding and find_output(model) is not None,
            lambda: check_loss_weighting(
                model, batch, need_loss(), weighted=cfg.weighted, tolerance=cfg.weight_tolerance
            ),
        ),
        "gradient_check": (
            False,
            lambda: check_gradient_check(
                model, batch, need_loss(), tolerance=cfg.gradient_tolerance
            ),
        ),
        "padding_side": (
            mask is not None and causal is True,
            lambda: check_padding_side(
                need(mask, "padding_side: the batch has no attention_mask"),
                causal=need(causal, "padding_side: say whether the model is causal (causal=)"),
            ),
        ),
        "data_passes": (
            cfg.min_passes is not None,
            lambda: check_data_passes(
                steps=need(facts.steps, "data_passes: the run's step count is unknown"),
                batch_size=need(facts.batch_size, "data_passes: the batch size is unknown"),
                unique_samples=need(
                    facts.unique_samples,
                    "data_passes: the dataset has no len(): unique samples unknown",
                ),
                min_passes=need(cfg.min_passes, "data_passes: give CheckConfig(min_passes=...)"),
            ),
        ),
    }
    chosen = cfg.checks if cfg.checks is not None else DEFAULT_CHECKS
    results: list[CheckResult] = []
    # The data first: a token id beyond the embedding would crash the model-running ones.
    for name in sorted(chosen, key=lambda c: c in _RUNS_MODEL):
        applies, run = runs[name]
        if cfg.checks is None and not applies:
            continue
        if name in _RUNS_MODEL and any(r.name == "vocab_size" and not r.passed for r in results):
            print(f"note: check {name} skipped: the batch does not fit the model", file=sys.stderr)
            continue
        try:
            results.append(run())
        except CheckError as exc:
            if cfg.checks is not None:
                raise
            print(f"note: check {name} skipped: {exc}", file=sys.stderr, flush=True)
    report(results, reporter=reporter, out=stream)
    return results


def report(
    results: Sequence[CheckResult], *, reporter: Reporter | None = None, out: TextIO | None = None
) -> None:
    """Print each result's line; under the harness each FAIL is also the job's alert
    (level ``error``, ``check`` = its name, so the incident is filed under the check)."""
    stream = out if out is not None else sys.stdout
    for r in results:
        print(r.line(), file=stream, flush=True)
        if not r.passed and reporter is not None and reporter.enabled:
            reporter.alert(
                r.line(),
                level="error",
                check=r.name,
                mistake=r.mistake_ids[0] if r.mistake_ids else "",
                mistake_ids=",".join(r.mistake_ids),
            )


def raise_on_fail(results: Sequence[CheckResult], on_fail: str) -> None:
    """:class:`ChecksFailed` when a check failed and ``on_fail`` is ``"abort"``."""
    if on_fail == "abort" and any(not r.passed for r in results):
        raise ChecksFailed(results)
