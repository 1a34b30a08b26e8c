"""The checks that run the model: gradient flow (M-032), loss weighting (M-002) and the
finite-difference gradient check (M-001, M-009).

Each takes the user's own model, one batch and ``loss_fn(model, batch)``, takes gradients
with ``torch.autograd.grad`` (no ``.grad`` is written, no optimiser or DDP hook fires)
and leaves the model as it found it (:func:`preserved`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from harness.job._check_base import (
    CheckError,
    CheckResult,
    LossFn,
    call_loss,
    find_output,
    map_tensors,
    names,
    preserved,
    result,
)

__all__ = ["check_gradient_check", "check_gradient_flow", "check_loss_weighting"]


# -- gradient flow (M-032) ----------------------------------------------------------------


def check_gradient_flow(model: nn.Module, batch: Any, loss_fn: LossFn) -> CheckResult:
    """One forward and backward: every trainable parameter gets a finite, non-zero gradient.

    A parameter with no gradient is cut out of the graph (a ``.detach()``, a layer never
    used); a zero or non-finite one cannot learn either. ``requires_grad=False``
    parameters are frozen by choice: named in the evidence, not failed.
    """
    named = list(model.named_parameters())
    trainable = [(n, p) for n, p in named if p.requires_grad]
    frozen = [n for n, p in named if not p.requires_grad]
    kept = f"; {len(frozen)} frozen by choice: {names(frozen)}" if frozen else ""
    if not trainable:
        return result("gradient_flow", False, f"no trainable parameter: all {len(named)} frozen")
    with preserved(model):
        loss = call_loss(loss_fn, model, batch)
        if loss.grad_fn is None:
            return result(
                "gradient_flow",
                False,
                f"the loss does not depend on any of the {len(trainable)} trainable parameters "
                f"(no graph){kept}",
            )
        value = loss.item()
        if not math.isfinite(value):
            return result("gradient_flow", False, f"the loss is {value}: no gradient to judge")
        grads = torch.autograd.grad(loss, [p for _, p in trainable], allow_unused=True)
    missing: list[str] = []
    zero: list[str] = []
    nonfinite: list[str] = []
    for (name, _), g in zip(trainable, grads, strict=True):
        if g is None:
            missing.append(name)
        elif not bool(torch.isfinite(g).all()):
            nonfinite.append(name)
        elif not bool(g.any()):
            zero.append(name)
    bad = len(missing) + len(zero) + len(nonfinite)
    if not bad:
        return result(
            "gradient_flow",
            True,
            f"all {len(trainable)} trainable parameters got finite non-zero gradients "
            f"(loss {value:.4g}){kept}",
        )
    parts = []
    if missing:
        parts.append(f"no gradient (cut out of the graph or unused): {names(missing)}")
    if zero:
        parts.append(f"zero gradient: {names(zero)}")
    if nonfinite:
        parts.append(f"non-finite gradient: {names(nonfinite)}")
    return result(
        "gradient_flow",
        False,
        f"{bad} of {len(trainable)} trainable parameters cannot learn: {'; '.join(parts)}{kept}",
    )


# -- loss weighting (M-002) ---------------------------------------------------------------


def _position(index: Sequence[int]) -> str:
    if len(index) == 1:
        return f"sample {index[0]}"
    if len(index) == 2:
        return f"(sample {index[0]}, position {index[1]})"
    return str(tuple(index))


def check_loss_weighting(
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn,
    *,
    weighted: bool = False,
    tolerance: float = 1.05,
    output: nn.Module | None = None,
) -> CheckResult:
    """How much each position's prediction weighs in the loss, declared or not.

    The output layer's logits are replaced (a forward hook) by zeros, the same uniform
    prediction at every position, and the gradient of the user's loss with respect to
    them is taken. For a softmax loss over classes (cross entropy, label smoothing) the
    norm of that gradient at a position is then its weight times one constant, whatever
    its target, so a mean over valid tokens gives every position the same norm.
    Positions with zero gradient carry no loss (masked, padded, shifted out) and are
    left out. FAIL when the heaviest position weighs more than ``tolerance`` times the
    lightest one, unless ``weighted=True`` is declared; then FAIL when all weigh the same
    (the declared weights are not applied). Not for regression losses: their gradient
    at zero depends on the target.
    """
    if not tolerance > 1:
        raise CheckError(f"loss_weighting tolerance must be > 1, got {tolerance!r}")
    if output is None:
        found = find_output(model)
        if found is None:
            raise CheckError("loss_weighting: no output layer (nn.Linear) found; pass output=")
        output = found[1]
    leaves: list[torch.Tensor] = []

    def uniform(_m: nn.Module, _inputs: Any, out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise CheckError("loss_weighting: the output layer does not return one tensor")
        leaf = torch.zeros_like(out, requires_grad=True)
        leaves.append(leaf)
        return leaf

    handle = output.register_forward_hook(uniform)
    try:
        with preserved(model):
            loss = call_loss(loss_fn, model, batch)
    finally:
        handle.remove()
    if len(leaves) != 1:
        raise CheckError(f"loss_weighting: the output layer ran {len(leaves)} times, expected once")
    (leaf,) = leaves
    if loss.grad_fn is None:
        raise CheckError("loss_weighting: the loss does not depend on the output layer")
    (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    if grad is None:
        raise CheckError("loss_weighting: the loss does not depend on the output layer")
    weights = (
        torch.linalg.vector_norm(grad.detach().double(), dim=-1) if grad.dim() > 1 else grad.abs()
    )
    flat = weights.reshape(-1)
    carry = torch.nonzero(flat > 0).reshape(-1)
    idle = flat.numel() - carry.numel()
    if carry.numel() == 0:
        return result("loss_weighting", False, f"none of {flat.numel()} positions carries any loss")
    w = flat[carry]
    hi, lo = int(carry[int(torch.argmax(w))]), int(carry[int(torch.argmin(w))])
    ratio = float(flat[hi] / flat[lo])
    shape = tuple(weights.shape)
    at_hi = _position([int(i) for i in torch.unravel_index(torch.tensor(hi), shape)])
    at_lo = _position([int(i) for i in torch.unravel_index(torch.tensor(lo), shape)])
    heavier = int((w > float(flat[lo]) * tolerance).sum())
    counted = f"{carry.numel()} positions with loss" + (
        f", {idle} without (masked)" if idle else ""
    )
    if weighted:
        if ratio > tolerance:
            return result(
                "loss_weighting",
                True,
                f"weighted as declared: {at_hi} weighs {ratio:.2f}x {at_lo} ({counted})",
            )
        return result(
            "loss_weighting",
            False,
            f"declared weighted, but all {carry.numel()} positions with loss weigh the same "
            f"(max/min {ratio:.4f} <= {tolerance:g}): the weights are not applied",
        )
    if ratio > tolerance:
        return result(
            "loss_weighting",
            False,
            f"positions weigh unequally: {at_hi} weighs {ratio:.2f}x {at_lo}; {heavier} "
            f"positions over {tolerance:g}x the lightest ({counted}); declare weighted=True "
            "if intended",
        )
    return result(
        "loss_weighting",
        True,
        f"positions weigh equally: max/min {ratio:.4f} <= {tolerance:g} ({counted})",
    )


# -- finite differences (M-001, M-009) ----------------------------------------------------


@contextlib.contextmanager
def _float64(model: nn.Module) -> Iterator[None]:
    """The model's floating parameters and buffers in float64 for a while; the original
    tensors (and so their values, bit for bit) are put back afterwards."""
    params = [(p, p.data) for p in model.parameters() if p.is_floating_point()]
    buffers = [
        (m, n, b)
        for m in model.modules()
        for n, b in m._buffers.items()
        if b is not None and b.is_floating_point()
    ]
    try:
        for p, data in params:
            p.data = data.to(torch.float64)
        for m, n, b in buffers:
            m._buffers[n] = b.to(torch.float64)
        yield
    finally:
        for p, data in params:
            p.data = data
        for m, n, b in buffers:
            m._buffers[n] = b


def _spread(items: Sequence[Any], k: int) -> list[Any]:
    """Up to ``k`` items spread over the sequence: the first, the last and between."""
    if len(items) <= k:
        return list(items)
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)] if k > 1 else [items[0]]


def check_gradient_check(
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn,
    *,
    params: Sequence[str] | None = None,
    n_params: int = 3,
    per_param: int = 2,
    eps: float = 1e-6,
    tolerance: float = 1e-2,
) -> CheckResult:
    """Autograd's gradient against central differences on a few scalars, in float64.

    ``params`` names the parameters (default: ``n_params`` trainable ones spread from the
    first to the last); of each, the ``per_param`` entries with the largest gradient are
    perturbed by ``+-eps``. The model runs in eval mode (dropout off) with its tensors
    switched to float64 and restored bit for bit. Relative error is
    ``|analytic - numeric| / max(|analytic|, |numeric|, 1e-6)``; a correct gradient agrees
    to about 1e-6, a broken backward is off by far more than the default ``tolerance``.
    """
    if not eps > 0 or not tolerance > 0 or n_params < 1 or per_param < 1:
        raise CheckError("gradient_check: eps, tolerance, n_params and per_param must be > 0")
    named = dict(model.named_parameters())
    if params is not None:
        unknown = [n for n in params if n not in named]
        if unknown:
            raise CheckError(f"gradient_check: no parameter named {names(unknown)}")
        chosen = [(n, named[n]) for n in params]
    else:
        trainable = [(n, p) for n, p in named.items() if p.requires_grad and p.is_floating_point()]
        chosen = _spread(trainable, n_params)
    if not chosen:
        raise CheckError("gradient_check: no trainable parameter to check")
    batch64 = map_tensors(batch, lambda t: t.double() if t.is_floating_point() else t)
    rows: list[tuple[float, str, float, float]] = []  # (rel, where, analytic, numeric)
    skipped: list[str] = []
    with preserved(model), _float64(model):
        model.eval()
        try:
            loss = call_loss(loss_fn, model, batch64)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckError(
                f"gradient_check: the model does not run in float64: {first}"
            ) from None
        grads = torch.autograd.grad(loss, [p for _, p in chosen], allow_unused=True)
        with torch.no_grad():
            for (name, p), g in zip(chosen, grads, strict=True):
                if g is None or not bool(g.any()):
                    skipped.append(name)
                    continue
                top = torch.topk(g.abs().reshape(-1), min(per_param, g.numel())).indices
                for flat in top.tolist():
                    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), p.shape))
                    orig = float(p[index])
                    p[index] = orig + eps
                    plus = float(call_loss(loss_fn, model, batch64))
                    p[index] = orig - eps
                    minus = float(call_loss(loss_fn, model, batch64))
                    p[index] = orig
                    numeric = (plus - minus) / (2 * eps)
                    analytic = float(g[index])
                    rel = abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-6)
                    where = f"{name}[{', '.join(map(str, index))}]" if index else name
                    rows.append((rel if math.isfinite(rel) else math.inf, where, analytic, numeric))
    if not rows:
        raise CheckError(f"gradient_check: no gradient to compare on {names(skipped)}")
    rel, where, analytic, numeric = max(rows, key=lambda r: r[0])
    how = (
        f"{len(rows)} scalars of {len(chosen) - len(skipped)} parameters, float64 central "
        f"differences eps {eps:g}"
    )
    numbers = f"{where}: analytic {analytic:.6g} vs numeric {numeric:.6g} (rel {rel:.2g}"
    if rel > tolerance:
        bad = sum(r[0] > tolerance for r in rows)
        return result(
            "gradient_check",
            False,
            f"{bad} of {len(rows)} gradients disagree; worst {numbers} > tolerance "
            f"{tolerance:g}); {how}",
        )
    return result("gradient_check", True, f"worst {numbers} <= tolerance {tolerance:g}); {how}")
