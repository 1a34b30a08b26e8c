"""The trainer under torchrun: 2 real ranks on CPU (gloo), a tiny model, a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.ddp import World, setup, shard

REPO = Path(__file__).resolve().parents[2]
TINY = ["--d-model", "32", "--layers", "1", "--heads", "2", "--batch", "16", "--seq-len", "16"]
TINY += ["--eval-windows", "64", "--warmup", "5", "--lr", "0.01", "--threads", "1"]


def test_each_rank_reads_its_own_shard_of_the_stream() -> None:
    bits = np.arange(10)
    assert shard(bits, World()).tolist() == list(range(10))
    parts = [shard(bits, World(rank=r, size=3)).tolist() for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_outside_torchrun_the_world_is_one_process() -> None:
    world = setup("cpu", environ={"RANK": "1"})  # no LOCAL_RANK / WORLD_SIZE: not torchrun
    assert world == World() and not world.distributed and world.main
    assert world.agree(torch.tensor(6.0), 3, stop=True) == (2.0, True)
    assert world.broadcast({"lr": 1}) == {"lr": 1} and world.gather(5) == [5]
    assert world.device("cuda") == "cuda"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _torchrun(tmp: Path, name: str, *args: str) -> Path:
    """Run the trainer as 2 ranks; its metrics files are ``tmp/name/``."""
    out = tmp / name
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["HARNESS_METRICS"] = str(out / "metrics.jsonl")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    argv += ["2", "-m", "model.train", *TINY, "--data-dir", str(tmp / "data"), *args]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_ranks_train_on_different_data_and_resume_exactly(tmp_path: Path) -> None:
    common = ["--log-every", "3", "--checkpoint-every", "6", "--eval-every", "0"]
    straight = _torchrun(tmp_path, "a", *common, "--steps", "12", "--out", str(tmp_path / "a"))

    main = _lines(straight / "metrics.jsonl")
    assert main[0]["event"] == "start" and main[0]["world_size"] == 2
    assert main[-1]["event"] == "end" and main[-1]["steps"] == 12 and "avg_bit_acc" in main[-1]
    other = _lines(straight / "metrics.rank1.jsonl")
    assert [m["step"] for m in other if "loss" in m] == [3, 6, 9, 12]
    assert not any("avg_bit_acc" in m or m.get("event") == "checkpoint" for m in other)
    ckpt = torch.load(tmp_path / "a/checkpoints/step-0000006.pt", weights_only=False)
    gens = [s["gen"] for s in ckpt["sampler_ranks"]]
    assert len(gens) == 2 and not torch.equal(gens[0], gens[1])  # each rank its own windows
    # the two ranks' losses differ (different data), rank 0 reports the mean over both
    mean = {m["step"]: m["loss"] for m in main if "loss" in m and "step" in m}
    assert all(abs(m["loss"] - mean[m["step"]]) > 1e-6 for m in other if "step" in m)

    resumed = _torchrun(
        tmp_path,
        "b",
        *common,
        "--steps",
        "12",
        "--out",
        str(tmp_path / "b"),
        "--resume",
        str(tmp_path / "a/checkpoints/step-0000006.pt"),
    )
    again = {
        m["step"]: m["loss"]
        for m in _lines(resumed / "metrics.jsonl")
        if "loss" in m and "step" in m
    }
    assert _lines(resumed / "metrics.jsonl")[0]["resumed_from"] == 6
    assert again[9] == pytest.approx(mean[9], rel=1e-6)
    assert again[12] == pytest.approx(mean[12], rel=1e-6)
