"""What every model check shares: its result, its errors, and how it finds things in a
model and a batch. Imports torch (the job side may); ``harness.job.checks`` is the face.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "MISTAKES",
    "CheckError",
    "CheckResult",
    "ChecksFailed",
    "LossFn",
    "call_loss",
    "find_embedding",
    "find_output",
    "names",
    "preserved",
    "token_tensors",
]

#: each check's name -> the mistakes of the catalogue it guards against
MISTAKES: dict[str, tuple[str, ...]] = {
    "gradient_flow": ("M-032",),
    "vocab_size": ("M-026",),
    "truncation": ("M-008",),
    "loss_weighting": ("M-002",),
    "gradient_check": ("M-001", "M-009"),
    "padding_side": ("M-003",),
    "data_passes": ("M-011",),
}

#: ``loss_fn(model, batch)``: the user's own loss of one batch (a scalar tensor, or an
#: output with a ``loss``: a mapping with ``"loss"`` or an object with ``.loss``)
LossFn = Callable[[nn.Module, Any], Any]


class CheckError(ValueError):
    """A check cannot judge what it was given (no embedding, no loss, a bad argument)."""


class ChecksFailed(RuntimeError):
    """At least one check failed and the callback was told to stop (``on_fail="abort"``);
    the message holds the FAIL lines."""

    def __init__(self, results: Sequence[CheckResult]) -> None:
        self.results = [r for r in results if not r.passed]
        lines = "; ".join(r.line() for r in self.results)
        super().__init__(f"model checks failed before training: {lines}")


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict with the numbers that decided it."""

    name: str
    passed: bool
    evidence: str
    mistake_ids: tuple[str, ...] = ()

    def line(self) -> str:
        """The preflight protocol's line: ``PASS name: evidence`` or ``FAIL name: evidence``."""
        evidence = " ".join(self.evidence.split())  # one line, whatever the evidence held
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {evidence}"


def result(name: str, passed: bool, evidence: str) -> CheckResult:
    return CheckResult(name, passed, evidence, MISTAKES[name])


def names(items: Sequence[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e +3 more``: evidence stays one short line."""
    shown = ", ".join(items[:limit])
    return shown + (f" +{len(items) - limit} more" if len(items) > limit else "")


# -- the model ----------------------------------------------------------------------------


def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name or type(model).__name__
    return type(module).__name__


def find_embedding(model: nn.Module) -> tuple[str, nn.Embedding] | None:
    """The input embedding: a Hugging Face model's ``get_input_embeddings()``, else the
    first ``nn.Embedding``."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        with contextlib.suppress(NotImplementedError, AttributeError):
            emb = getter()
            if isinstance(emb, nn.Embedding):
                return module_name(model, emb), emb
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding):
            return name, m
    return None


def find_output(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The output layer: a Hugging Face model's ``get_output_embeddings()``, else the last
    ``nn.Linear``."""
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        with contextlib.suppress(NotImplementedError, AttributeError):
            out = getter()
            if isinstance(out, nn.Linear):
                return module_name(model, out), out
    last: tuple[str, nn.Linear] | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    return last


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run a check without leaving a trace: each module's train/eval mode, the buffers
    (batch-norm statistics a forward updates) and the random number generators (dropout
    draws) are as they were afterwards. Gradients are taken with ``torch.autograd.grad``,
    so no ``.grad`` is touched either."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [
        (m, n, b.clone()) for m in model.modules() for n, b in m._buffers.items() if b is not None
    ]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for m, n, saved in buffers:
                current = m._buffers.get(n)
                if current is not None and current.shape == saved.shape:
                    current.copy_(saved)


# -- the loss and the batch ---------------------------------------------------------------


def call_loss(loss_fn: LossFn, model: nn.Module, batch: Any) -> torch.Tensor:
    """The scalar loss ``loss_fn`` returns, or CheckError saying what came back instead."""
    out = loss_fn(model, batch)
    loss = out
    if isinstance(out, Mapping):
        loss = out.get("loss")
    elif not isinstance(out, torch.Tensor) and hasattr(out, "loss"):
        loss = out.loss
    if not isinstance(loss, torch.Tensor):
        raise CheckError(
            f"the loss function returned {type(out).__name__}, not a loss tensor "
            "(pass loss_fn=... returning the scalar loss)"
        )
    if loss.numel() != 1:
        raise CheckError(f"the loss has shape {tuple(loss.shape)}: expected a scalar")
    return loss.reshape(())


def _int_tensor(value: Any) -> torch.Tensor | None:
    if (
        isinstance(value, torch.Tensor)
        and not value.is_floating_point()
        and value.dtype != torch.bool
    ):
        return value
    return None


def token_tensors(
    batch: Any, key: str = "input_ids"
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(token ids, labels) of a batch: ``batch[key]`` and ``batch["labels"]`` of a mapping,
    the first and second integer tensors of a tuple, or the batch itself."""
    if batch is None:
        return None, None
    if isinstance(batch, Mapping) or (hasattr(batch, "keys") and hasattr(batch, "get")):
        ids, labels = batch.get(key), batch.get("labels")
        return _int_tensor(ids), _int_tensor(labels)
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        ints = [t for t in (_int_tensor(v) for v in batch) if t is not None]
        return (ints[0] if ints else None), (ints[1] if len(ints) > 1 else None)
    return _int_tensor(batch), None


def attention_mask_of(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, Mapping) or (hasattr(batch, "keys") and hasattr(batch, "get")):
        mask = batch.get("attention_mask")
        return mask if isinstance(mask, torch.Tensor) else None
    return None


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``fn`` applied to every tensor in it (mappings, lists, tuples)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping) or (hasattr(batch, "keys") and hasattr(batch, "items")):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(map_tensors(v, fn) for v in batch))
    if isinstance(batch, tuple | list):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch
