"""The checks of data against the model: vocabulary size (M-026), truncation (M-008),
padding side (M-003) and passes over the data (M-011). None of them runs the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from harness.job._check_base import (
    CheckError,
    CheckResult,
    find_embedding,
    find_output,
    names,
    result,
    token_tensors,
)

__all__ = ["check_data_passes", "check_padding_side", "check_truncation", "check_vocab_size"]


# -- vocabulary (M-026) -------------------------------------------------------------------


def tokenizer_size(tokenizer: Any) -> int:
    """``len(tokenizer)`` (added tokens included), else its ``vocab_size``."""
    try:
        return len(tokenizer)
    except TypeError:
        pass
    size = getattr(tokenizer, "vocab_size", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise CheckError(
        f"vocab_size: cannot tell the size of {type(tokenizer).__name__} (no len, no vocab_size)"
    )


def check_vocab_size(
    model: nn.Module,
    batch: Any = None,
    *,
    vocab_size: int | None = None,
    tokenizer: Any = None,
    output: bool = True,
    key: str = "input_ids",
) -> CheckResult:
    """The vocabulary against the model's input embedding rows and output layer size.

    The vocabulary is ``vocab_size``, else the tokenizer's size, else (a lower bound) the
    batch's largest token id + 1. FAIL when a vocabulary or a token id does not fit the
    embedding, or the output layer (``output=False`` for a model whose output is not over
    the vocabulary, e.g. a classifier) has fewer outputs than the vocabulary or a label
    id. An embedding larger than the vocabulary is fine (padded tables are common).
    """
    found = find_embedding(model)
    if found is None:
        raise CheckError("vocab_size: the model has no nn.Embedding to compare a vocabulary with")
    emb_name, emb = found
    rows = emb.num_embeddings
    head = find_output(model) if output else None
    ids, labels = token_tensors(batch, key)
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise CheckError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        vocab, source = vocab_size, "declared"
    elif tokenizer is not None:
        vocab, source = tokenizer_size(tokenizer), "tokenizer"
    else:
        vocab, source = None, ""
    if vocab is None and ids is None:
        raise CheckError("vocab_size: give vocab_size=, a tokenizer or a batch of token ids")
    problems: list[str] = []
    seen = ""
    if ids is not None and ids.numel():
        top, low = int(ids.max()), int(ids.min())
        seen = f"; batch ids {low}..{top}"
        if top >= rows:
            problems.append(f"token id {top} in the batch >= {rows} rows of embedding {emb_name}")
        if low < 0:
            problems.append(f"negative token id {low} in the batch")
        if vocab is None:
            vocab, source = top + 1, "batch max id + 1, a lower bound"
    assert vocab is not None
    from_batch = source.startswith("batch")
    if vocab > rows and not from_batch:  # from the batch: the token id above says it
        problems.append(f"vocabulary of {vocab} ({source}) > {rows} rows of embedding {emb_name}")
    out_text = ""
    if head is not None:
        head_name, linear = head
        outs = linear.out_features
        out_text = f", output {head_name} ({outs})"
        if outs < vocab and not from_batch:
            problems.append(
                f"output layer {head_name} has {outs} outputs < vocabulary of {vocab} ({source})"
            )
        elif outs < vocab:
            problems.append(f"token id {vocab - 1} in the batch >= {outs} outputs of {head_name}")
        if labels is not None:
            valid = labels[labels >= 0]
            if valid.numel() and int(valid.max()) >= outs:
                problems.append(f"label id {int(valid.max())} >= {outs} outputs of {head_name}")
    if problems:
        return result("vocab_size", False, "; ".join(problems))
    return result(
        "vocab_size",
        True,
        f"vocabulary of {vocab} ({source}) fits embedding {emb_name} ({rows} rows){out_text}{seen}",
    )


# -- truncation (M-008) -------------------------------------------------------------------


def _row_lengths(data: Any, key: str) -> list[int]:
    """Per-sample lengths of: lengths, token lists, a tensor of ids, or a batch mapping with
    ``length``, ``attention_mask`` or ``key``."""
    if isinstance(data, Mapping) or (hasattr(data, "keys") and hasattr(data, "__getitem__")):
        for field in ("length", "attention_mask", key):
            if field in data:
                value = data[field]
                if field == "attention_mask":
                    if isinstance(value, torch.Tensor):
                        return [int(n) for n in (value != 0).sum(dim=-1).reshape(-1).tolist()]
                    return [sum(1 for v in row if v) for row in value]
                return _row_lengths(value, key)
        raise CheckError(f"truncation: the batch has none of length, attention_mask, {key}")
    if isinstance(data, torch.Tensor):
        if data.dim() == 1 and not data.is_floating_point():
            return [int(n) for n in data.tolist()]  # lengths
        if data.dim() == 2:
            return [data.shape[1]] * data.shape[0]
        raise CheckError(
            f"truncation: expected lengths or a 2-d tensor of ids, got shape {tuple(data.shape)}"
        )
    if isinstance(data, Sequence) and not isinstance(data, str):
        if all(isinstance(n, int) and not isinstance(n, bool) for n in data):
            return list(data)
        if all(isinstance(row, Sequence | torch.Tensor) for row in data):
            return [len(row) for row in data]
    raise CheckError(f"truncation: cannot read sample lengths from {type(data).__name__}")


def check_truncation(
    data: Any, seq_len: int, *, key: str = "input_ids", max_fraction: float = 0.0
) -> CheckResult:
    """How many samples exceed ``seq_len``: from per-sample lengths, token lists before
    truncation, an attention mask, or a tensor of ids (its width). FAIL when more than
    ``max_fraction`` of the samples are longer (their tail would be cut silently)."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise CheckError(f"truncation: seq_len must be a positive integer, got {seq_len!r}")
    if not 0 <= max_fraction < 1:
        raise CheckError(f"truncation: max_fraction must be in [0, 1), got {max_fraction!r}")
    lengths = _row_lengths(data, key)
    if not lengths:
        raise CheckError("truncation: no samples")
    over = [n for n in lengths if n > seq_len]
    longest = max(lengths)
    if not over:
        return result(
            "truncation",
            True,
            f"all {len(lengths)} samples fit seq_len {seq_len} (longest {longest})",
        )
    cut = sum(n - seq_len for n in over) / sum(over)
    text = (
        f"{len(over)} of {len(lengths)} samples exceed seq_len {seq_len} (longest {longest}; "
        f"{cut:.0%} of their tokens cut)"
    )
    return result("truncation", len(over) / len(lengths) <= max_fraction, text)


# -- padding side (M-003) -----------------------------------------------------------------


def check_padding_side(
    attention_mask: Any, *, causal: bool = True, expected: str | None = None
) -> CheckResult:
    """Rows of an attention mask padded on the wrong side. A decoder (``causal``) trains
    on right-padded rows (its first token at position 0, as at inference); an encoder,
    by M-003's fix, on left-padded ones; ``expected`` ("left" or "right") overrides."""
    side = expected or ("right" if causal else "left")
    if side not in ("left", "right"):
        raise CheckError(f"padding_side: expected must be 'left' or 'right', got {side!r}")
    mask = torch.as_tensor(attention_mask)
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.dim() != 2:
        raise CheckError(
            f"padding_side: expected a 2-d attention mask, got shape {tuple(mask.shape)}"
        )
    on = (mask != 0).to(torch.int8)
    step = on[:, 1:] - on[:, :-1]  # +1 where padding ends, -1 where it starts
    padded = (on == 0).any(dim=1)
    rising, falling = (step > 0).any(dim=1), (step < 0).any(dim=1)
    left, right = padded & ~falling, padded & ~rising
    wrong = (padded & ~right) if side == "right" else (padded & ~left)
    who = "a decoder" if causal else "an encoder"
    n, n_padded, n_wrong = mask.shape[0], int(padded.sum()), int(wrong.sum())
    if not n_wrong:
        return result(
            "padding_side",
            True,
            f"all {n_padded} padded rows of {n} are {side}-padded ({who.split()[1]})"
            if n_padded
            else f"no row of {n} is padded",
        )
    rows = [str(i) for i in torch.nonzero(wrong).reshape(-1).tolist()]
    both = int((wrong & rising & falling).sum())
    kind = f"{'left' if side == 'right' else 'right'}-padded" + (
        f" ({both} padded inside)" if both else ""
    )
    return result(
        "padding_side",
        False,
        f"{n_wrong} of {n} rows are {kind}; {who} trains on {side} padding: rows {names(rows)}",
    )


# -- passes over the data (M-011) ---------------------------------------------------------


def check_data_passes(
    *, steps: int, batch_size: int, unique_samples: int, min_passes: float
) -> CheckResult:
    """Samples seen over the run (``steps`` x ``batch_size``, the samples of one optimiser
    step over all ranks) against ``min_passes`` x the unique samples."""
    for label, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("unique_samples", unique_samples),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckError(f"data_passes: {label} must be a positive integer, got {value!r}")
    if not (isinstance(min_passes, int | float) and math.isfinite(min_passes) and min_passes > 0):
        raise CheckError(f"data_passes: min_passes must be a positive number, got {min_passes!r}")
    seen = steps * batch_size
    passes = seen / unique_samples
    text = (
        f"{steps} steps x {batch_size} = {seen} samples seen over {unique_samples} unique: "
        f"{passes:.2f} passes"
    )
    if passes >= min_passes:
        return result("data_passes", True, f"{text} >= min_passes {min_passes:g}")
    need = math.ceil(min_passes * unique_samples / batch_size)
    return result("data_passes", False, f"{text} < min_passes {min_passes:g} (needs {need} steps)")
