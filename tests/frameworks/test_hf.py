"""HarnessCallback under a real transformers.Trainer, supervised: a tiny GPT-2 built from
a config, trained for a few CPU steps (tests/frameworks/jobs/hf_job.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runtime.controls import update_controls
from harness.runtime.supervisor import Supervisor
from memory import Store
from tests.e2e.conftest import incidents
from tests.frameworks._helpers import events, launch, lines, run_to_end, steps, wait_for_step

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def test_metrics_phases_checkpoints_reach_the_supervisor_and_a_live_lr_sticks(
    sup: Supervisor, store: Store
) -> None:
    run_id = await launch(sup, "hf_job.py", "hf-ok", FW_WAIT_LR_AT=6)
    run_dir = await wait_for_step(store, run_id, 6)
    update_controls(run_dir, {"lr": 0.01, "checkpoint_every": 0})
    run = await run_to_end(sup, run_id)

    assert run.status == "succeeded", run.summary
    rows = lines(run_dir)
    (start,) = events(rows, "start")
    assert start["total_steps"] == 12 and start["device"] == "cpu"
    train = steps(rows)
    # logging_steps=50 in the job: the callback has the Trainer log every step
    assert [r["step"] for r in train] == list(range(1, 13))
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in train)
    # A constant schedule is a LambdaLR that rewrites lr each step; the control holds.
    assert {r["lr"] for r in train if r["step"] <= 7} == {0.001}
    assert [r["lr"] for r in train if r["step"] >= 8] == pytest.approx([0.01] * 5)
    (applied,) = events(rows, "controls")
    assert applied["applied"] == {"lr": 0.01, "checkpoint_every": 0}
    phases = [r["phase"] for r in events(rows, "phase")]
    assert phases[:3] == ["train", "eval", "train"] and "checkpoint" in phases
    # save_steps=5 until checkpoint_every=0 stopped saving at step 7 (the final save stays)
    ckpts = events(rows, "checkpoint")
    assert [c["step"] for c in ckpts] == [5, 12]
    assert all(Path(c["path"]).is_dir() for c in ckpts)
    assert [r["step"] for r in rows if "eval_loss" in r and "event" not in r] == [4, 8, 12]
    (end,) = events(rows, "end")
    assert end["step"] == 12 and "train_loss" in end and "eval_loss" in end


async def test_a_nan_loss_is_aborted_by_the_supervisor(sup: Supervisor, store: Store) -> None:
    # The Trainer hides a NaN loss in its log (logging_nan_inf_filter); grad_norm shows it.
    run_id = await launch(sup, "hf_job.py", "hf-nan", FW_NAN_AT=3, FW_STEPS=500)
    run = await run_to_end(sup, run_id)

    assert run.status == "aborted", run.summary
    (inc,) = [i for i in incidents(store, run_id) if i.rule == "nonfinite"]
    assert inc.evidence["metric"] in ("loss", "grad_norm")
    first_nan = next(r for r in steps(lines(run.run_dir)) if "nan" in (r["loss"], r["grad_norm"]))
    assert first_nan["step"] == 4


async def test_token_ids_beyond_the_embedding_stop_the_run_at_train_begin(
    sup: Supervisor, store: Store
) -> None:
    run_id = await launch(sup, "hf_job.py", "hf-vocab", FW_VOCAB_OVER=1)
    run = await run_to_end(sup, run_id)

    assert run.status in ("failed", "aborted"), run.summary
    rows = lines(run.run_dir)
    assert steps(rows) == []
    (alert,) = [a for a in events(rows, "alert") if a["check"] == "vocab_size"]
    assert alert["level"] == "error" and alert["mistake"] == "M-026"
    assert "in the batch >= 64 rows of embedding transformer.wte" in alert["text"]
    assert ">= 64 outputs of lm_head" in alert["text"]
    stdout = (Path(run.run_dir) / "stdout.log").read_text()
    assert alert["text"] in stdout
    (inc,) = [i for i in incidents(store, run_id) if i.rule == "vocab_size"]
    assert inc.mistake_id == "M-026" and inc.severity == "error"
    assert "rows of embedding transformer.wte" in inc.summary
