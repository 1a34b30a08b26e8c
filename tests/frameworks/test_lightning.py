"""HarnessCallback under a real Lightning fit, supervised: a tiny LightningModule trained
for a few CPU steps by the supervisor (tests/frameworks/jobs/lightning_job.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runtime.controls import update_controls
from harness.runtime.supervisor import Supervisor
from memory import Store
from tests.e2e.conftest import get_run, incidents
from tests.frameworks._helpers import events, launch, lines, run_to_end, steps, wait_for_step

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def test_metrics_phases_checkpoints_reach_the_supervisor_and_a_live_lr_sticks(
    sup: Supervisor, store: Store
) -> None:
    # The job waits at step 6 until controls.json has an lr: the control lands mid-run.
    run_id = await launch(sup, "lightning_job.py", "pl-ok", FW_WAIT_LR_AT=6)
    run_dir = await wait_for_step(store, run_id, 6)
    # what `harness controls set` writes: a new lr, validation every 3 batches, no more
    # step checkpoints
    update_controls(run_dir, {"lr": 0.05, "eval_every": 3, "checkpoint_every": 0})
    run = await run_to_end(sup, run_id)

    assert run.status == "succeeded", run.summary
    rows = lines(run_dir)
    (start,) = events(rows, "start")
    assert start["total_steps"] == 12 and start["device"] == "cpu"
    assert run.result["progress"]["total_steps"] == 12
    train = steps(rows)
    assert [r["step"] for r in train] == list(range(1, 13))
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in train)
    # The job's LambdaLR rewrites lr every step; the control still holds to the end.
    assert {r["lr"] for r in train if r["step"] <= 7} == {0.01}
    assert [r["lr"] for r in train if r["step"] >= 8] == pytest.approx([0.05] * 5)
    (applied,) = events(rows, "controls")
    assert applied["applied"] == {"lr": 0.05, "eval_every": 3, "checkpoint_every": 0}
    # validation every 4 batches, then every 3 (batch 9, then 12); step saves at 5, none after
    assert [r["step"] for r in rows if "val_loss" in r and "event" not in r] == [4, 9, 12]
    phases = [r["phase"] for r in events(rows, "phase")]
    assert phases[:3] == ["train", "eval", "train"]
    assert "checkpoint" in phases and phases[-1] == "train"
    ckpts = events(rows, "checkpoint")
    assert [c["step"] for c in ckpts] == [5]
    assert all(Path(c["path"]).is_file() for c in ckpts)
    (end,) = events(rows, "end")
    assert end["step"] == 12 and "val_loss" in end
    assert any("val_loss" in r for r in rows if "event" not in r)  # validation metrics


async def test_a_nan_loss_is_aborted_by_the_supervisor(sup: Supervisor, store: Store) -> None:
    run_id = await launch(sup, "lightning_job.py", "pl-nan", FW_NAN_AT=3, FW_STEPS=500)
    run = await run_to_end(sup, run_id)

    assert run.status == "aborted", run.summary
    (inc,) = [i for i in incidents(store, run_id) if i.rule == "nonfinite"]
    assert inc.evidence["metric"] in ("loss", "grad_norm")
    nan_steps = [r["step"] for r in steps(lines(run.run_dir)) if r["loss"] == "nan"]
    assert nan_steps and nan_steps[0] == 4  # global_step 3 is the 4th optimiser step


async def test_a_layer_cut_from_the_graph_stops_the_fit_before_step_one(
    sup: Supervisor, store: Store
) -> None:
    run_id = await launch(sup, "lightning_job.py", "pl-cut", FW_CUT=1)
    run = await run_to_end(sup, run_id)

    assert run.status in ("failed", "aborted"), run.summary
    rows = lines(run.run_dir)
    assert steps(rows) == []  # not one optimiser step
    (alert,) = [a for a in events(rows, "alert") if a["check"] == "gradient_flow"]
    assert alert["level"] == "error" and alert["mistake"] == "M-032"
    assert alert["text"].startswith("FAIL gradient_flow: 2 of 5 trainable parameters cannot learn")
    assert "mid.weight, mid.bias" in alert["text"]
    out = Path(get_run(store, run_id).run_dir)
    assert alert["text"] in (out / "stdout.log").read_text()
    assert (
        "model checks failed before training: FAIL gradient_flow"
        in (out / "stderr.log").read_text()
    )
    # the alert is an incident under the check, linked to its mistake
    (inc,) = [i for i in incidents(store, run_id) if i.rule == "gradient_flow"]
    assert inc.mistake_id == "M-032" and inc.severity == "error"
    assert "mid.weight, mid.bias" in inc.summary
