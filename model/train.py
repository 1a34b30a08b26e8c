"""Train BitGPT on a bit-stream task and talk to the harness through harness.job.

    python -m model.train --task echo                 # CPU or GPU, defaults per task
    python -m model.train --task echo --preflight     # checks only, exit 0 if all pass
    python -m model.train --task echo --resume runs/local/checkpoints/step-0000200.pt

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m model.train --task echo

Read top to bottom: controls, evaluation, checkpoints, the training loop, main (the
defaults and the command line are model/config.py, the checks model/preflight.py, what
changes under torchrun model/ddp.py: `--batch` is then per rank). Outside the harness (no
HARNESS_* variables) the reporter is a no-op and progress is printed to stdout.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from harness.job import Reporter
from model import ddp
from model.config import TASK_DEFAULTS, TrainConfig, parse_args
from model.data import (
    TASKS,
    DataError,
    WindowSampler,
    load_bits,
)
from model.model import BitGPT

__all__ = ["TASK_DEFAULTS", "Controls", "TrainConfig", "main", "validate_control"]


# -- live controls ------------------------------------------------------------------------


@dataclass
class Controls:
    """What the supervisor may change while the job runs (controls.json)."""

    lr: float
    data_weights: dict[str, float] = field(default_factory=dict)
    eval_every: int = 100
    checkpoint_every: int = 200


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_control(key: str, value: object, seq_len: int) -> tuple[Any, str | None]:
    """(clean value, None) when acceptable, else (None, reason). Pure: tests call it directly."""
    if key == "lr":
        if not _number(value):
            return None, f"must be a number, got {value!r}"
        if value <= 0:  # type: ignore[operator]
            return None, f"must be > 0, got {value}"
        return float(value), None  # type: ignore[arg-type]
    if key in ("eval_every", "checkpoint_every"):
        if not isinstance(value, int) or isinstance(value, bool):
            return None, f"must be an integer, got {value!r}"
        if value < 0:
            return None, f"must be >= 0 (0 turns it off), got {value}"
        return value, None
    if key == "data_weights":
        if not isinstance(value, dict) or not value:
            return None, f"must be a non-empty object task -> weight, got {value!r}"
        for task, w in value.items():
            if task not in TASKS:
                return None, f"unknown task {task!r} (known: {', '.join(TASKS)})"
            if not _number(w) or w <= 0:
                return None, f"weight of {task!r} must be a number > 0, got {w!r}"
            if TASKS[task].min_seq_len > seq_len:
                return None, f"{task} needs seq_len >= {TASKS[task].min_seq_len}, run has {seq_len}"
        return {t: float(w) for t, w in value.items()}, None
    return None, "unknown control (known: lr, data_weights, eval_every, checkpoint_every)"


def apply_controls(
    new: dict[str, Any],
    seen: dict[str, Any],
    controls: Controls,
    seq_len: int,
    rep: Reporter,
    set_mix: Callable[[dict[str, float]], None],
) -> None:
    """Apply the keys of controls.json that changed since last time; report what happened.

    ``seen`` holds the values already handled, so an unchanged bad value is not rejected
    again on every later change of the file. A rejected value leaves the old one in place.
    """
    applied: dict[str, Any] = {}
    rejected: dict[str, str] = {}
    for key, value in new.items():
        if key in seen and seen[key] == value:
            continue
        seen[key] = value
        clean, reason = validate_control(key, value, seq_len)
        if reason is None and key == "data_weights":
            rep.phase("data")  # new tasks' data may be generated: not idle training time
            try:
                set_mix(clean)
            except DataError as exc:
                reason = str(exc)
            rep.phase("train")
        if reason is None:
            setattr(controls, key, clean)
            applied[key] = clean
        else:
            rejected[key] = reason
            print(f"control {key} rejected: {reason}", file=sys.stderr, flush=True)
    if applied or rejected:
        rep.applied(applied, **({"rejected": rejected} if rejected else {}))


# -- evaluation ---------------------------------------------------------------------------


def eval_windows(val_bits: torch.Tensor, seq_len: int, n: int) -> torch.Tensor:
    """Fixed held-out windows (n', seq_len + 1, 128), the same at every eval.

    Starts are k * stride for an odd stride and n' a multiple of 64: k * stride then runs
    through every residue mod 64 equally often, so every group phase of every task (groups
    of 8..64) starts the same number of windows and the unpredictable transitions fall
    where they do on average. The measured accuracy is then comparable with the ceiling.
    """
    n = max(64, -(-n // 64) * 64)
    stride = (len(val_bits) - seq_len - 1) // n
    stride -= 1 - stride % 2  # make it odd
    if stride < 1:
        raise DataError(f"held-out split too short for {n} windows of {seq_len}")
    idx = torch.arange(n, device=val_bits.device)[:, None] * stride
    return val_bits[idx + torch.arange(seq_len + 1, device=val_bits.device)]


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, amp: bool) -> tuple[float, list[float]]:
    """Average bit accuracy over all positions, and the accuracy at each window position."""
    model.eval()
    correct = torch.zeros(windows.shape[1] - 1, device=windows.device)
    for chunk in windows.split(256):
        x, y = chunk[:, :-1].float(), chunk[:, 1:].float()
        with torch.autocast(windows.device.type, torch.bfloat16, enabled=amp):
            logits = model(x)
        correct += ((logits.float() > 0) == (y > 0.5)).float().mean(dim=2).sum(dim=0)
    model.train()
    per_pos = (correct / len(windows)).tolist()
    return sum(per_pos) / len(per_pos), per_pos


# -- checkpoints --------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict[str, Any], keep: int = 3) -> None:
    """Write atomically (a killed job never leaves half a checkpoint); keep the last few."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in sorted(path.parent.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# -- training -----------------------------------------------------------------------------


class _Interrupt:
    """SIGINT sets a flag; the loop checkpoints and exits 0 so the work is kept."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C kills at once


def train(cfg: TrainConfig, rep: Reporter) -> int:
    """Train (or resume) as configured; 0 when done or interrupted with a checkpoint."""
    need = TASKS[cfg.task].min_seq_len
    if cfg.seq_len < need:
        print(f"error: {cfg.task} needs --seq-len >= {need}, got {cfg.seq_len}", file=sys.stderr)
        return 2
    world = ddp.setup(cfg.device)  # a world of one unless torchrun started us
    cfg.device = world.device(cfg.device)
    if cfg.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        # The supervisor aborts a CPU job that leaves cores idle: use all of them, shared
        # between the ranks on this machine.
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world.local_size))

    stop = _Interrupt()
    previous_handler = signal.signal(signal.SIGINT, stop)
    try:
        return _run(cfg, rep, stop, world)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        world.close()


def _run(cfg: TrainConfig, rep: Reporter, stop: _Interrupt, world: ddp.World) -> int:
    """Build (or restore) model, optimiser, controls and data; loop; report.

    Under torchrun every rank runs this; rank 0 alone evaluates, checkpoints and reports
    to metrics.jsonl (``main_rep``), and every rank reports its throughput to ``rep``
    (rank 0's line is in metrics.jsonl, the others' in metrics.rank<R>.jsonl).
    """
    main_rep = rep if world.main else Reporter(environ={})  # a disabled reporter: a no-op
    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        ckpt = torch.load(cfg.resume, map_location="cpu", weights_only=False)
        # The run continues as it was: architecture, task and batch come from the checkpoint.
        saved = ckpt["config"]
        for key in ("task", "seq_len", "d_model", "layers", "heads", "batch", "seed", "warmup"):
            setattr(cfg, key, saved[key])

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP checks it)
    model = BitGPT(cfg.model_config()).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0, fused=cuda or None
    )
    controls = Controls(
        lr=cfg.lr,
        data_weights={cfg.task: 1.0},
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
    )
    # Each rank its own windows: a generator seeded by its rank, over its shard of the data.
    sampler = WindowSampler(cfg.seq_len, device, cfg.seed + world.rank)
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        controls = Controls(**ckpt["controls"])
        step = ckpt["step"]
    # DDP averages the gradients over the ranks during backward; rank 0's weights are
    # broadcast once here, so every rank starts (and stays) the same.
    net = DistributedDataParallel(model) if world.distributed else model
    fwd = torch.compile(net) if cfg.compile else net

    ceiling = TASKS[cfg.task].ceiling(cfg.seq_len)
    main_rep.start(
        total_steps=cfg.steps,
        device=str(device),
        task=cfg.task,
        ceiling=ceiling,
        batch=cfg.batch,
        seq_len=cfg.seq_len,
        params=model.num_params(),
        resumed_from=step,
        world_size=world.size,
    )
    if not world.main:
        rep.start(total_steps=cfg.steps, device=str(device), rank=world.rank, batch=cfg.batch)
    ranks = f" x {world.size} ranks" if world.size > 1 else ""
    print(
        f"{cfg.task}: {model.num_params():,} params, batch {cfg.batch}{ranks}, "
        f"seq_len {cfg.seq_len}, {cfg.steps} steps on {device}, ceiling {ceiling:.4f}",
        flush=True,
    )

    def set_mix(weights: dict[str, float]) -> None:
        """Sample from these tasks from now on, generating their data when missing."""
        for task in weights:
            if task not in sampler.streams:
                bits = load_bits(Path(cfg.data_dir), task, "train", cfg.seed)
                sampler.add(task, ddp.shard(bits, world))
        sampler.set_weights(weights)

    main_rep.phase("data")
    set_mix(controls.data_weights)
    if world.main:
        val = load_bits(Path(cfg.data_dir), cfg.task, "val", cfg.seed)
        windows = eval_windows(torch.from_numpy(val).to(device), cfg.seq_len, cfg.eval_windows)
    if ckpt is not None:
        per_rank = ckpt.get("sampler_ranks") or [ckpt["sampler"]]
        if world.rank < len(per_rank):  # with more ranks than saved, the new ones start fresh
            sampler.load_state_dict(per_rank[world.rank])
        _set_rng_states(ckpt["rng"])

    def checkpoint() -> Path:
        """Every rank calls it (their sampler states are gathered); rank 0 writes it."""
        main_rep.phase("checkpoint")
        path = Path(cfg.out) / "checkpoints" / f"step-{step:07d}.pt"
        samplers = world.gather(sampler.state_dict())
        if world.main:
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "rng": _rng_states(),
                "sampler": samplers[0],
                "sampler_ranks": samplers,
                "controls": asdict(controls),
                "config": asdict(cfg),
            }
            save_checkpoint(path, state)
        main_rep.checkpoint(path, step)
        return path

    def run_eval() -> float:
        main_rep.phase("eval")
        acc, per_pos = evaluate(model, windows, amp=cuda)
        pos_acc = [round(a, 4) for a in per_pos]
        main_rep.step(step, avg_bit_acc=acc, ceiling=ceiling, pos_acc=pos_acc)
        print(f"step {step}: avg_bit_acc {acc:.4f} (ceiling {ceiling:.4f})", flush=True)
        return acc

    seen: dict[str, Any] = {}  # last controls.json values, so each change is handled once
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    n_sum, last_loss, grad_norm = 0, float("nan"), torch.zeros(())
    t_last, steps_last, fwd_ms = time.monotonic(), step, float("nan")
    stopping = False  # agreed by every rank (model/ddp.py): they all stop at the same step
    main_rep.phase("train")
    while step < cfg.steps and not stopping:
        # Live controls: a stat() per step, a read only when the file changed. Under torchrun
        # rank 0 reads them at logging steps and every rank applies the same values.
        if not world.distributed or step % cfg.log_every == 0:
            new = world.broadcast(main_rep.controls())
            if new is not None:
                apply_controls(new, seen, controls, cfg.seq_len, main_rep, set_mix)

        # Linear warmup to the controlled lr, then constant: the lr control means what it says.
        lr = controls.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        for group in opt.param_groups:
            group["lr"] = lr

        x, y = sampler.batch(cfg.batch)
        # The forward time of the last step before each report: this rank's compute alone
        # (the gradient all-reduce is in backward), so a slow rank shows as a straggler.
        timed = (step + 1) % cfg.log_every == 0
        if timed and cuda:
            torch.cuda.synchronize(device)
        t_fwd = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
            logits = fwd(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        if timed:
            if cuda:
                torch.cuda.synchronize(device)
            fwd_ms = (time.perf_counter() - t_fwd) * 1000
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_sum += loss.detach()
        n_sum += 1

        if step % cfg.log_every == 0 or step == cfg.steps:
            mine = None if world.main else (loss_sum / n_sum).item()  # this rank's own loss
            # the only host sync in the loop: the mean loss over the ranks, and stop or not
            last_loss, stopping = world.agree(loss_sum, n_sum, stop.requested)
            now = time.monotonic()
            rate = (step - steps_last) * cfg.batch / max(now - t_last, 1e-9)
            if world.main:
                # loss: the mean over every rank; samples_per_s: this rank's (each rank does
                # the same steps, so the job's is world_size times it)
                rep.step(
                    step,
                    loss=last_loss,
                    lr=lr,
                    grad_norm=grad_norm.item(),
                    samples_per_s=rate,
                    fwd_ms=round(fwd_ms, 3),
                )
            else:
                rep.step(step, loss=mine, samples_per_s=rate, fwd_ms=round(fwd_ms, 3))
            loss_sum.zero_()
            n_sum, t_last, steps_last = 0, now, step
        elif not world.distributed:
            stopping = stop.requested
        every_eval, every_ckpt = controls.eval_every, controls.checkpoint_every
        if every_eval and step % every_eval == 0 and step < cfg.steps and world.main:
            run_eval()
            main_rep.phase("train")
        if every_ckpt and step % every_ckpt == 0 and step < cfg.steps:
            checkpoint()
            main_rep.phase("train")

    if n_sum:
        last_loss = (loss_sum / n_sum).item()
    path = checkpoint()
    if stopping:
        print(f"interrupted at step {step}: checkpoint {path}", flush=True)
        main_rep.end(
            interrupted=True, steps=step, loss=last_loss, ceiling=ceiling, checkpoint=str(path)
        )
        if not world.main:
            rep.end(interrupted=True, steps=step)
        return 0
    if world.main:
        acc = run_eval()
        rep.end(avg_bit_acc=acc, ceiling=ceiling, loss=last_loss, steps=step, checkpoint=str(path))
    else:
        rep.end(steps=step)
    world.barrier()  # the ranks leave together, once rank 0 has evaluated
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv, dict(os.environ))
    if cfg.preflight:
        from model.preflight import preflight

        return preflight(cfg)
    with Reporter() as rep:
        try:
            return train(cfg, rep)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    if "TORCHELASTIC_ERROR_FILE" in os.environ:  # under torchrun: a crash reaches its report
        from torch.distributed.elastic.multiprocessing.errors import record

        sys.exit(record(main)())
    sys.exit(main())
