"""The bundled trainer with a frozen model: a fault for tests/diagnosis/record_real.py.

    python -m tests.diagnosis.frozen_train MODE -- <model.train arguments>

``model/`` has no flag to freeze layers, so this wraps ``model.train.main`` and swaps the
model class for a subclass that freezes parameters right after it is built (the trainer's
optimiser then skips them, and its reported ``grad_norm`` covers only the rest):

- ``most``: every parameter frozen except the final LayerNorm (``ln_f``): the network
  keeps its random features and only rescales them.
- ``head0``: the output head scaled to ~1e-7 and frozen, the rest trainable: every
  gradient upstream passes through the near-zero head, so it all but vanishes.
"""

from __future__ import annotations

import sys

import torch

import model.train
from model.model import BitGPT, GPTConfig

MODES = ("most", "head0")


def frozen_model_class(mode: str) -> type[BitGPT]:
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {MODES}, got {mode!r}")

    class Frozen(BitGPT):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__(cfg)
            for name, p in self.named_parameters():
                if mode == "most":
                    p.requires_grad_(name.startswith("ln_f."))
                elif name.startswith("head."):
                    with torch.no_grad():
                        p.mul_(1e-5)  # weights ~0.02 * 1e-5 = 2e-7, bias stays 0
                    p.requires_grad_(False)

    return Frozen


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: python -m tests.diagnosis.frozen_train MODE -- ARGS...")
    model.train.BitGPT = frozen_model_class(argv[0])  # type: ignore[misc]
    return model.train.main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
