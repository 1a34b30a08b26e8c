"""A tiny Lightning language model trained for a few steps under HarnessCallback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parents[3]))  # the repository, for tests.*
from harness.job.lightning import HarnessCallback
from tests.frameworks.jobs._common import knob, wait_for_lr

VOCAB, DIM, SEQ = 32, 16, 8


class TinyLM(pl.LightningModule):
    def __init__(self, cut: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.mid = nn.Linear(DIM, DIM)
        self.head = nn.Linear(DIM, VOCAB)
        self.cut = cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        m = torch.tanh(self.mid(h))
        if self.cut:
            m = m.detach()  # the mistake: mid never learns
        return self.head(h + m)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        loss = self._loss(batch)
        nan_at = knob("FW_NAN_AT", -1)
        if nan_at >= 0 and self.trainer.global_step >= nan_at:
            loss = loss * float("nan")
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # rewrites lr each step
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class WaitForLr(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == knob("FW_WAIT_LR_AT", -1):
            wait_for_lr()


def main() -> None:
    torch.manual_seed(0)
    top = VOCAB + 8 if knob("FW_VOCAB_OVER") else VOCAB
    x = torch.randint(0, top, (64, SEQ))
    data = TensorDataset(x, torch.roll(x, -1, dims=1) % VOCAB)
    run_dir = Path(os.environ.get("HARNESS_RUN_DIR", "."))
    trainer = pl.Trainer(
        max_steps=knob("FW_STEPS", 12),
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[
            HarnessCallback(),
            WaitForLr(),
            pl.callbacks.ModelCheckpoint(
                dirpath=run_dir / "ckpt", every_n_train_steps=5, save_top_k=-1
            ),
        ],
    )
    model = TinyLM(cut=bool(knob("FW_CUT")))
    trainer.fit(
        model,
        DataLoader(data, batch_size=4, shuffle=True),
        DataLoader(data, batch_size=8),
    )


if __name__ == "__main__":
    main()
