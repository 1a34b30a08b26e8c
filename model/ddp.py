"""Data parallelism for the trainer: what changes when it runs under torchrun.

torchrun starts one process per rank with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and
``LOCAL_WORLD_SIZE`` (and the rendezvous address) in its environment. The trainer then:

- joins the process group: gloo on CPU, NCCL on CUDA, one GPU per rank (``cuda:LOCAL_RANK``);
- wraps the model in ``DistributedDataParallel`` (gradients averaged across ranks);
- reads its own shard of the training stream (:func:`shard`), so each rank sees different
  data, with a sampler seeded by its rank;
- agrees with the other ranks, at every logging step, on the mean loss and on whether to
  stop (one all-reduce of three numbers), so a SIGINT that reaches the ranks a step apart
  still stops them all at the same step, with one checkpoint;
- takes live controls from rank 0, which reads ``controls.json`` and broadcasts what
  changed: every rank must use the same lr at the same step or their weights drift apart;
- leaves metrics, evaluation and checkpoints to rank 0; the other ranks write their own
  throughput to ``metrics.rank<R>.jsonl`` (``harness.job.Reporter`` picks the file).

Outside torchrun :func:`setup` returns a world of one and every function here is the
identity, so the training loop has a single code path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["World", "setup", "shard"]


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of the job."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, checkpoints and writes ``metrics.jsonl``."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """The device of this rank: ``cuda`` (or ``cuda:N``) becomes ``cuda:LOCAL_RANK``."""
        if self.distributed and device.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return device

    def agree(self, loss_sum: torch.Tensor, n: int, stop: bool) -> tuple[float, bool]:
        """(mean loss over every rank's last ``n`` steps, whether any rank wants to stop).

        The one collective the loop adds, at logging steps only: it also syncs the host.
        """
        if not self.distributed:
            return (loss_sum / max(n, 1)).item(), stop
        sums = torch.stack(
            [loss_sum.float(), loss_sum.new_tensor(float(n)), loss_sum.new_tensor(float(stop))]
        )
        dist.all_reduce(sums)
        total, count, stops = sums.tolist()
        return total / max(count, 1.0), stops > 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a small picklable object)."""
        if not self.distributed:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed:
            dist.destroy_process_group()


def _int(environ: Mapping[str, str], key: str, default: int) -> int:
    value = environ.get(key, "")
    return int(value) if value.isascii() and value.isdigit() else default


def setup(device: str, environ: Mapping[str, str] | None = None) -> World:
    """Join the job's process group when torchrun started us; a world of one otherwise."""
    env = os.environ if environ is None else environ
    if "LOCAL_RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    world = World(
        rank=_int(env, "RANK", 0),
        local_rank=_int(env, "LOCAL_RANK", 0),
        size=_int(env, "WORLD_SIZE", 1),
        local_size=_int(env, "LOCAL_WORLD_SIZE", 1),
    )
    if device.startswith("cuda"):
        torch.cuda.set_device(world.local_rank)
        # device_id: NCCL connects eagerly, on this rank's GPU
        dist.init_process_group("nccl", device_id=torch.device("cuda", world.local_rank))
    else:
        dist.init_process_group("gloo")
    return world


def shard(bits: np.ndarray, world: World) -> np.ndarray:
    """This rank's contiguous slice of a stream: ranks never train on the same positions."""
    if world.size == 1:
        return bits
    per = len(bits) // world.size
    return bits[world.rank * per : (world.rank + 1) * per]
