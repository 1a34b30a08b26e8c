"""A small causal transformer over 128-bit positions.

Each position is a vector of 128 bits; the model reads a window of positions and, at every
position, outputs 128 logits: its guess for each bit of the *next* position. Read it top
to bottom: config, attention, MLP, block, model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BITS", "BitGPT", "GPTConfig", "check_gradient_flow"]

BITS = 128  # bits per position (16 bytes)


@dataclass(frozen=True)
class GPTConfig:
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    max_seq_len: int = 64  # size of the learned positional table
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads")

    @classmethod
    def tiny(cls) -> GPTConfig:
        """For tests: a few thousand parameters, fast on one CPU core."""
        return cls(d_model=32, n_layers=1, n_heads=2, max_seq_len=32, mlp_ratio=2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # (b, t, d) -> (b, heads, t, d/heads): attention runs per head
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        # is_causal: position i attends to 0..i only, so the target (position i+1) never leaks
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm: normalise the input of each sub-layer, keep the residual stream raw."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class BitGPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Always a projection, even when d_model == 128: a skipped layer is one less
        # thing the gradient-flow preflight would catch, and widths stay free to change.
        self.inp = nn.Linear(BITS, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, BITS)
        self.apply(self._init)
        # GPT-2's trick: scale the layers that write into the residual stream so its
        # variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        """bits: (batch, seq, 128) in {0, 1} -> logits (batch, seq, 128) for the next position."""
        t = bits.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} positions > max_seq_len {self.cfg.max_seq_len}")
        # Centre the bits at +-1: a 0 bit then carries as much signal as a 1 bit.
        x = self.inp(bits * 2.0 - 1.0) + self.pos(torch.arange(t, device=bits.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def check_gradient_flow(
    model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> list[str]:
    """Names of parameters that are frozen or get no finite non-zero gradient from the loss.

    One forward/backward of the real loss on a dummy batch. A frozen parameter, one cut
    out of the graph (None gradient), one whose gradient is all zero or not finite: each
    would let the run "train" while part of the model never learns.
    """
    x, y = batch
    model.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(model(x).float(), y).backward()
    bad = []
    for name, p in model.named_parameters():
        g = p.grad
        if not p.requires_grad or g is None or not torch.isfinite(g).all() or not g.any():
            bad.append(name)
    model.zero_grad(set_to_none=True)
    return bad
