"""``HarnessCallback`` for PyTorch Lightning: the job protocol, live ``lr`` /
``eval_every`` / ``checkpoint_every``, and the model checks at fit start::

    from harness.job.lightning import HarnessCallback

    trainer = L.Trainer(max_steps=1000, callbacks=[HarnessCallback()])

Under the harness it reports ``start`` (total steps, device), every optimiser step
(``loss``, ``grad_norm`` before clipping, ``lr``), ``phase`` events around validation
and checkpoints, each ``checkpoint`` with its path (written through the strategy's
CheckpointIO), validation metrics, and ``end`` with the final metrics. Outside it (no
``HARNESS_METRICS``) every hook returns at once. See docs/frameworks.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.fabric.plugins import CheckpointIO
except ImportError as exc:  # pragma: no cover - the extra is part of dev
    raise ImportError(
        f"harness.job.lightning needs PyTorch Lightning ({exc}): pip install 'harness[lightning]'"
    ) from None

import torch

from harness.job._callback import (
    ControlRejected,
    JobLink,
    grad_norm,
    positive_lr,
    set_lr,
    step_count,
)
from harness.job.checks import CheckConfig, CheckError, LossFn, RunFacts
from harness.job.report import Reporter

__all__ = ["HarnessCallback", "training_step_loss"]

_UNSUPPORTED = {"data_weights": "not steered by the Lightning callback (the data is yours)"}


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@contextmanager
def _quiet(module: pl.LightningModule) -> Iterator[None]:
    """``self.log`` / ``self.log_dict`` as no-ops: a check's forward is not a training step."""
    module.log = lambda *a, **k: None
    module.log_dict = lambda *a, **k: None
    try:
        yield
    finally:
        del module.log, module.log_dict


def training_step_loss(module: torch.nn.Module, batch: Any) -> Any:
    """The default ``loss_fn`` of the checks: the module's own ``training_step``, unlogged."""
    assert isinstance(module, pl.LightningModule)
    with _quiet(module):
        return module.training_step(batch, 0)


class _ReportingIO(CheckpointIO):
    """The strategy's CheckpointIO, with the ``checkpoint`` phase and event around each save."""

    def __init__(self, inner: CheckpointIO, link: JobLink, trainer: pl.Trainer) -> None:
        self.inner, self.link, self.trainer = inner, link, trainer

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        before = self.link.phase_now or "train"
        self.link.phase("checkpoint")
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
        step = checkpoint.get("global_step", self.trainer.global_step)
        self.link.checkpoint(os.fspath(path), int(step))
        self.link.phase(before)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return self.inner.load_checkpoint(
            path, map_location=map_location, weights_only=weights_only
        )

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


class HarnessCallback(pl.Callback):
    """Speaks the job protocol for a Lightning fit; see the module docstring.

    ``checks``: which model checks run at train start and what a FAIL does (default:
    every check that applies, ``on_fail="abort"``); ``loss_fn(module, batch)``: the loss
    they judge (default: the module's ``training_step``, with ``self.log`` silenced);
    ``tokenizer``: for the vocabulary check; ``reporter``: default ``Reporter()`` from the
    environment.
    """

    def __init__(
        self,
        *,
        checks: CheckConfig | None = None,
        loss_fn: LossFn | None = None,
        tokenizer: Any = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.link = JobLink(reporter)
        self.check_config = checks if checks is not None else CheckConfig()
        self.loss_fn = loss_fn
        self.tokenizer = tokenizer
        self.results: list[Any] = []  # the checks' results at train start
        self._losses: list[float] = []
        self._last_step = -1
        self._grad_norm: float | None = None
        self._lr: float | None = None
        self._last_loss: float | None = None

    # -- fit start -------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.link.enabled or stage != "fit":
            return
        self.link.set_rank(trainer.global_rank)
        io = trainer.strategy.checkpoint_io
        if not isinstance(io, _ReportingIO):
            trainer.strategy.checkpoint_io = _ReportingIO(io, self.link, trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.link.enabled:
            return
        estimated = trainer.estimated_stepping_batches
        total = int(estimated) if math.isfinite(estimated) else max(trainer.max_steps, 0)
        self._last_step = trainer.global_step
        self.link.start(
            total_steps=total,
            device=str(pl_module.device),
            framework="lightning",
            world_size=trainer.world_size,
        )
        self.link.phase("train")
        loader = trainer.train_dataloader

        def first_batch() -> Any:
            if loader is None:
                raise CheckError("no train dataloader to take a batch from")
            batch = next(iter(loader))
            return trainer.strategy.batch_to_device(batch, pl_module.device)

        self.results = self.link.fit_start_checks(
            pl_module,
            first_batch,
            self.loss_fn if self.loss_fn is not None else training_step_loss,
            self.check_config,
            tokenizer=self.tokenizer,
            facts=self._facts(trainer, total),
        )

    @staticmethod
    def _facts(trainer: pl.Trainer, total: int) -> RunFacts:
        loader = trainer.train_dataloader
        size = getattr(loader, "batch_size", None)
        dataset = getattr(loader, "dataset", None)
        try:
            unique = len(dataset) if dataset is not None else None
        except TypeError:
            unique = None
        batch = size * trainer.accumulate_grad_batches * trainer.world_size if size else None
        return RunFacts(steps=total or None, batch_size=batch, unique_samples=unique)

    # -- each step -------------------------------------------------------------------

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.link.enabled:
            return
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        self.link.controls(
            {
                "lr": lambda v: self._apply_lr(trainer, schedulers, v),
                "eval_every": lambda v: self._apply_eval_every(trainer, v),
                "checkpoint_every": lambda v: self._apply_checkpoint_every(trainer, v),
            },
            _UNSUPPORTED,
            share=lambda value: trainer.strategy.broadcast(value, src=0),
        )

    @staticmethod
    def _apply_lr(trainer: pl.Trainer, schedulers: list[Any], value: Any) -> float:
        lr = positive_lr(value)
        set_lr(trainer.optimizers, schedulers, lr)
        return lr

    @staticmethod
    def _apply_eval_every(trainer: pl.Trainer, value: Any) -> int:
        """``eval_every`` -> the batches between validations (``val_check_batch``)."""
        every = step_count("eval_every", value, 1)
        if getattr(trainer, "val_check_batch", None) is None or trainer.val_dataloaders is None:
            raise ControlRejected("eval_every: this fit has no validation to schedule")
        trainer.val_check_batch = every
        return every

    @staticmethod
    def _apply_checkpoint_every(trainer: pl.Trainer, value: Any) -> int:
        """``checkpoint_every`` -> each ModelCheckpoint's step interval (0: no step saves)."""
        every = step_count("checkpoint_every", value, 0)
        savers = [
            cb
            for cb in trainer.checkpoint_callbacks
            if isinstance(getattr(cb, "_every_n_train_steps", None), int)
        ]
        if not savers:
            raise ControlRejected("checkpoint_every: no ModelCheckpoint saves by steps here")
        for cb in savers:
            cb._every_n_train_steps = every
        return every

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.link.enabled or (trainer.optimizers and optimizer is not trainer.optimizers[0]):
            return
        self._grad_norm = grad_norm(pl_module.parameters())
        self._lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self.link.enabled:
            return
        loss = _scalar(outputs.get("loss") if isinstance(outputs, dict) else outputs)
        if loss is not None:
            self._losses.append(loss)
        if trainer.global_step == self._last_step:
            return  # accumulating: no optimiser step yet
        self._last_step = trainer.global_step
        mean = sum(self._losses) / len(self._losses) if self._losses else None
        self._losses = []
        self._last_loss = mean
        self.link.step(trainer.global_step, loss=mean, grad_norm=self._grad_norm, lr=self._lr)

    # -- validation and the end ------------------------------------------------------

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.link.enabled:
            self.link.phase("eval")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.link.enabled:
            return
        if not trainer.sanity_checking:
            metrics = self._metrics(trainer)
            if metrics:
                self.link.step(trainer.global_step, **metrics)
        self.link.phase("train")

    @staticmethod
    def _metrics(trainer: pl.Trainer) -> dict[str, float]:
        out = {}
        for key, value in trainer.callback_metrics.items():
            number = _scalar(value)
            if number is not None:
                out[key] = number
        return out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.link.enabled:
            return
        final = self._metrics(trainer)
        if self._last_loss is not None:
            final.setdefault("loss", self._last_loss)
        self.link.end(step=trainer.global_step, **final)
