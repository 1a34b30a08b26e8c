"""A tiny GPT-2 (built from a config) trained for a few steps by transformers.Trainer."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).parents[3]))  # the repository, for tests.*
from harness.job.hf import HarnessCallback
from tests.frameworks.jobs._common import knob, wait_for_lr

VOCAB, SEQ = 64, 16


class NanTrainer(Trainer):
    """The loss turns NaN from step FW_NAN_AT (the Trainer hides a NaN loss in its log by
    default, logging_nan_inf_filter; the gradient norm shows it)."""

    def compute_loss(self, model, inputs, *args: Any, **kwargs: Any):
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        nan_at = knob("FW_NAN_AT", -1)
        if isinstance(loss, torch.Tensor) and 0 <= nan_at <= self.state.global_step:
            loss = loss * float("nan")
        return loss


class WaitForLr(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == knob("FW_WAIT_LR_AT", -1):
            wait_for_lr()


def main() -> None:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    if knob("FW_CUT"):
        mlp: Any = model.transformer.h[1].mlp
        forward = mlp.forward
        mlp.forward = lambda h: forward(h).detach()  # the mistake: block 1's MLP never learns
    top = VOCAB + 16 if knob("FW_VOCAB_OVER") else VOCAB
    ids = torch.randint(0, top, (48, SEQ))
    data = [
        {"input_ids": r, "labels": r, "attention_mask": torch.ones(SEQ, dtype=torch.long)}
        for r in ids
    ]
    run_dir = Path(os.environ.get("HARNESS_RUN_DIR", "."))
    args = TrainingArguments(
        output_dir=str(run_dir / "out"),
        max_steps=knob("FW_STEPS", 12),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        lr_scheduler_type="constant",  # a LambdaLR: rewrites lr from base_lrs each step
        logging_steps=50,  # fewer than the steps: the callback makes the Trainer log each step
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=5,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = NanTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data[:8],
        callbacks=[HarnessCallback(), WaitForLr()],
    )
    trainer.train()


if __name__ == "__main__":
    main()
