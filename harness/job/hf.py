"""``HarnessCallback`` for Hugging Face ``transformers.Trainer``: the job protocol, live
``lr`` / ``eval_every`` / ``checkpoint_every``, and the model checks at train begin::

    from harness.job.hf import HarnessCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[HarnessCallback()])

Under the harness the Trainer logs every step (``control.should_log``), so each step
line carries the Trainer's own ``loss``, ``grad_norm`` (before clipping) and ``lr``
(its ``learning_rate``); evaluation metrics (``eval_*``) arrive as step lines too. Phases:
``eval`` from the first prediction step to ``on_evaluate``, ``checkpoint`` from the step
that decides to save to ``on_save``, whose ``checkpoint-<step>`` folder is reported.
Outside the harness (no ``HARNESS_METRICS``) every hook returns at once. See
docs/frameworks.md.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as exc:  # pragma: no cover - the extra is part of dev
    raise ImportError(
        f"harness.job.hf needs Hugging Face transformers ({exc}): pip install 'harness[hf]'"
    ) from None

import torch

from harness.job._callback import (
    ControlRejected,
    JobLink,
    positive_lr,
    set_lr,
    step_count,
)
from harness.job._check_base import map_tensors
from harness.job.checks import CheckConfig, LossFn, RunFacts
from harness.job.report import Reporter

__all__ = ["HarnessCallback", "model_loss"]

#: what the Trainer logs at the end of training (kept for the ``end`` line)
_TRAIN_SUMMARY = (
    "train_loss",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
)


def model_loss(model: torch.nn.Module, batch: Any) -> Any:
    """The default ``loss_fn`` of the checks: the model's own output ``loss``."""
    return model(**batch) if hasattr(batch, "keys") else model(batch)


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value))


class HarnessCallback(TrainerCallback):
    """Speaks the job protocol for a ``Trainer`` run; see the module docstring.

    ``checks``: which model checks run at train begin and what a FAIL does (default:
    every check that applies, ``on_fail="abort"``); ``loss_fn(model, batch)``: the loss
    they judge (default: the model's output ``loss``); ``tokenizer``: for the vocabulary
    check (default: the Trainer's ``processing_class``); ``log_every``: the Trainer logs
    every this many steps under the harness; ``reporter``: default ``Reporter()``.
    """

    def __init__(
        self,
        *,
        checks: CheckConfig | None = None,
        loss_fn: LossFn | None = None,
        tokenizer: Any = None,
        log_every: int = 1,
        reporter: Reporter | None = None,
    ) -> None:
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every: must be an integer >= 1, got {log_every!r}")
        self.link = JobLink(reporter)
        self.check_config = checks if checks is not None else CheckConfig()
        self.loss_fn = loss_fn
        self.tokenizer = tokenizer
        self.log_every = log_every
        self.results: list[Any] = []  # the checks' results at train begin
        self._optimizer: Any = None
        self._scheduler: Any = None
        self._save_pending = False
        self._eval_pending = False
        self._final: dict[str, Any] = {}

    # -- train begin -----------------------------------------------------------------

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        processing_class: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        if not self.link.enabled:
            return
        self.link.set_rank(args.process_index)
        self._optimizer, self._scheduler = optimizer, lr_scheduler
        self.link.start(
            total_steps=int(state.max_steps),
            device=str(args.device),
            framework="transformers",
            world_size=args.world_size,
        )
        self.link.phase("train")
        if model is None or train_dataloader is None:
            return
        device = next((p.device for p in model.parameters()), torch.device("cpu"))

        def first_batch() -> Any:
            return map_tensors(next(iter(train_dataloader)), lambda t: t.to(device))

        tokenizer = self.tokenizer
        if tokenizer is None and (
            hasattr(processing_class, "vocab_size") or hasattr(processing_class, "__len__")
        ):
            tokenizer = processing_class
        self.results = self.link.fit_start_checks(
            model,
            first_batch,
            self.loss_fn if self.loss_fn is not None else model_loss,
            self.check_config,
            tokenizer=tokenizer,
            facts=self._facts(args, state, train_dataloader),
        )

    @staticmethod
    def _facts(args: TrainingArguments, state: TrainerState, loader: Any) -> RunFacts:
        dataset = getattr(loader, "dataset", None)
        try:
            unique = len(dataset) if dataset is not None else None
        except TypeError:
            unique = None
        batch = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        return RunFacts(steps=int(state.max_steps) or None, batch_size=batch, unique_samples=unique)

    # -- each step -------------------------------------------------------------------

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.link.enabled:
            return
        self.link.phase("train")
        self.link.controls(
            {
                "lr": self._apply_lr,
                "eval_every": lambda v: self._apply_every(args, state, "eval_every", v),
                "checkpoint_every": lambda v: self._apply_every(args, state, "checkpoint_every", v),
            },
            {"data_weights": "not steered by the Hugging Face callback"},
        )

    def _apply_lr(self, value: Any) -> float:
        lr = positive_lr(value)
        set_lr([self._optimizer] if self._optimizer is not None else [], [self._scheduler], lr)
        return lr

    @staticmethod
    def _apply_every(args: TrainingArguments, state: TrainerState, key: str, value: Any) -> int:
        """``eval_every`` -> ``state.eval_steps`` (>= 1), ``checkpoint_every`` ->
        ``state.save_steps`` (0 stops saving): what the Trainer's flow reads each step."""
        if key == "eval_every":
            if _strategy(args.eval_strategy) != "steps":
                raise ControlRejected(
                    "eval_strategy is not 'steps': the Trainer evaluates by epoch or never"
                )
            state.eval_steps = step_count(key, value, 1)
            return state.eval_steps
        if _strategy(args.save_strategy) != "steps":
            raise ControlRejected(
                "save_strategy is not 'steps': the Trainer saves by epoch, best or never"
            )
        state.save_steps = step_count(key, value, 0)
        return state.save_steps

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.link.enabled:
            return
        if state.global_step % self.log_every == 0:
            control.should_log = True
        # DefaultFlowCallback (first in the list) has decided: log, then eval, then save.
        self._eval_pending = bool(control.should_evaluate)
        self._save_pending = bool(control.should_save)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.link.enabled or not logs:
            return
        if "loss" in logs:
            self.link.step(
                state.global_step,
                loss=logs.get("loss"),
                grad_norm=logs.get("grad_norm"),
                lr=logs.get("learning_rate"),
                epoch=logs.get("epoch"),
            )
            self._final["loss"] = logs.get("loss")
            if self._save_pending and not self._eval_pending:
                self.link.phase("checkpoint")
        evals = {
            k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, int | float)
        }
        if evals:
            self.link.step(state.global_step, **evals)
            self._final.update(evals)
        self._final.update({k: logs[k] for k in _TRAIN_SUMMARY if k in logs})

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.link.enabled:
            self.link.phase("eval")

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.link.enabled:
            return
        self._eval_pending = False
        self.link.phase("checkpoint" if self._save_pending else "train")

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.link.enabled:
            return
        self._save_pending = False
        path = os.path.join(args.output_dir or ".", f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if os.path.isdir(path):
            self.link.checkpoint(path, state.global_step)
        self.link.phase("train")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.link.enabled:
            self.link.end(step=state.global_step, **self._final)
