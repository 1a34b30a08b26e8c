"""The model checks on tiny torch models: each passes the right thing and fails the
mistake it exists for, with the names and numbers in its line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.job import Reporter
from harness.job import checks as c
from harness.job._callback import JobLink, set_lr
from harness.runtime.preflight import _CHECK_LINE
from mistakes import MODEL_CHECKS, RULE_LINKS

V, D, T = 32, 16, 8


class LM(nn.Module):
    def __init__(self, cut: bool = False, unused: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.mid = nn.Linear(D, D)
        self.spare = nn.Linear(D, D) if unused else None
        self.head = nn.Linear(D, V)
        self.cut = cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        m = torch.tanh(self.mid(h))
        return self.head(h + (m.detach() if self.cut else m))


def ce(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))


def first_ten_times(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    per = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none")
    w = torch.ones_like(per)
    w[:, 0] = 10.0
    return (per * w).mean()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (4, T), generator=g)
    y = torch.randint(0, V, (4, T), generator=g)
    y[0, 5:] = -100  # masked targets
    return x, y


def test_every_line_is_the_preflight_protocols_and_names_its_mistakes() -> None:
    assert tuple(c.MISTAKES) == c.CHECKS
    for name in c.CHECKS:
        assert len(name) <= 60 and ":" not in name
        r = c.CheckResult(name, False, "line one\nline two", c.MISTAKES[name])
        m = _CHECK_LINE.match(r.line())
        assert m is not None
        assert (m.group(1), m.group(2), m.group(3)) == ("FAIL", name, "line one line two")
    assert c.MISTAKES["gradient_check"] == ("M-001", "M-009")
    # the job side's links are the catalogue's (the supervisor files the alert by name)
    assert {n: RULE_LINKS[n] for n in c.CHECKS} == c.MISTAKES
    assert set(c.CHECKS) <= MODEL_CHECKS  # the supervisor files their alerts by name


def test_gradient_flow_names_a_layer_cut_out_by_detach_and_one_never_used(batch: Any) -> None:
    torch.manual_seed(0)
    assert c.check_gradient_flow(LM(), batch, ce).passed
    cut = c.check_gradient_flow(LM(cut=True), batch, ce)
    assert not cut.passed and cut.mistake_ids == ("M-032",)
    assert "2 of 5 trainable parameters cannot learn" in cut.evidence
    assert "mid.weight, mid.bias" in cut.evidence
    unused = c.check_gradient_flow(LM(unused=True), batch, ce)
    assert not unused.passed and "spare.weight, spare.bias" in unused.evidence


def test_gradient_flow_reports_frozen_parameters_as_a_choice_and_leaves_no_grad(batch: Any) -> None:
    model = LM()
    model.mid.requires_grad_(False)
    r = c.check_gradient_flow(model, batch, ce)
    assert r.passed
    assert "2 frozen by choice: mid.weight, mid.bias" in r.evidence
    assert all(p.grad is None for p in model.parameters())


def test_gradient_flow_fails_on_a_nan_loss(batch: Any) -> None:
    r = c.check_gradient_flow(LM(), batch, lambda m, b: ce(m, b) * float("nan"))
    assert not r.passed and "the loss is nan" in r.evidence


def test_vocab_size_names_the_token_id_the_sizes_and_the_modules(batch: Any) -> None:
    x, y = batch
    assert c.check_vocab_size(LM(), batch).passed
    over = c.check_vocab_size(LM(), (x + 8, y))
    assert not over.passed and over.mistake_ids == ("M-026",)
    assert f"token id {int(x.max()) + 8} in the batch >= 32 rows of embedding emb" in over.evidence
    big = c.check_vocab_size(LM(), vocab_size=50)
    assert "vocabulary of 50 (declared) > 32 rows of embedding emb" in big.evidence
    assert "output layer head has 32 outputs < vocabulary of 50" in big.evidence
    tok = mock.Mock(spec=["__len__"])
    tok.__len__ = mock.Mock(return_value=40)
    assert "vocabulary of 40 (tokenizer)" in c.check_vocab_size(LM(), tokenizer=tok).evidence


def test_vocab_size_finds_a_hugging_face_models_own_embeddings() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    )
    r = c.check_vocab_size(model, {"input_ids": torch.tensor([[1, 70]])})
    assert not r.passed
    assert "token id 70 in the batch >= 64 rows of embedding transformer.wte" in r.evidence
    assert ">= 64 outputs of lm_head" in r.evidence


def test_vocab_size_cannot_judge_a_model_without_an_embedding() -> None:
    with pytest.raises(c.CheckError, match=r"no nn\.Embedding"):
        c.check_vocab_size(nn.Linear(3, 3), torch.tensor([[1]]))


def test_truncation_counts_samples_over_seq_len_from_lengths_lists_and_masks() -> None:
    r = c.check_truncation([[1] * 10, [1] * 70, [1] * 3], 64)
    assert not r.passed and r.mistake_ids == ("M-008",)
    assert r.evidence == "1 of 3 samples exceed seq_len 64 (longest 70; 9% of their tokens cut)"
    assert c.check_truncation([10, 70, 3], 64, max_fraction=0.5).passed
    mask = torch.ones(2, 20)
    mask[1, 12:] = 0
    assert c.check_truncation({"attention_mask": mask}, 16).evidence.startswith("1 of 2 samples")
    with pytest.raises(c.CheckError, match="seq_len"):
        c.check_truncation([1], 0)


def test_loss_weighting_passes_a_token_mean_and_fails_position_0_weighted_tenfold(
    batch: Any,
) -> None:
    fair = c.check_loss_weighting(LM(), batch, ce)
    assert fair.passed, fair.evidence
    assert "29 positions with loss, 3 without (masked)" in fair.evidence
    bad = c.check_loss_weighting(LM(), batch, first_ten_times)
    assert not bad.passed and bad.mistake_ids == ("M-002",)
    assert "(sample 0, position 0) weighs 10.00x" in bad.evidence
    assert "declare weighted=True" in bad.evidence
    assert c.check_loss_weighting(LM(), batch, first_ten_times, weighted=True).passed
    unapplied = c.check_loss_weighting(LM(), batch, ce, weighted=True)
    assert not unapplied.passed and "the weights are not applied" in unapplied.evidence


def test_loss_weighting_flags_a_per_sequence_mean_over_unequal_lengths(batch: Any) -> None:
    def per_sequence(model: nn.Module, b: Any) -> torch.Tensor:
        x, y = b
        per = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none", ignore_index=-100)
        valid = (y != -100).float()
        return ((per * valid).sum(1) / valid.sum(1)).mean()

    r = c.check_loss_weighting(LM(), batch, per_sequence)
    assert not r.passed and "1.60x" in r.evidence  # 8 tokens vs 5 in sample 0


class _WrongSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * 3 * x  # should be 2 x


class HandRolled(LM):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _WrongSquare.apply(super().forward(x))
        return out


def test_gradient_check_passes_autograd_and_names_a_broken_backward(batch: Any) -> None:
    torch.manual_seed(0)
    model = LM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ok = c.check_gradient_check(model, batch, ce)
    assert ok.passed and "tolerance 0.01" in ok.evidence and "float64" in ok.evidence
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    bad = c.check_gradient_check(HandRolled(), batch, ce)
    assert not bad.passed and bad.mistake_ids == ("M-001", "M-009")
    assert (
        "analytic" in bad.evidence
        and "numeric" in bad.evidence
        and "> tolerance 0.01" in bad.evidence
    )


def test_padding_side_counts_left_padded_rows_of_a_decoder() -> None:
    mask = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    r = c.check_padding_side(mask, causal=True)
    assert not r.passed and r.mistake_ids == ("M-003",)
    assert r.evidence == "2 of 4 rows are left-padded; a decoder trains on right padding: rows 1, 3"
    assert c.check_padding_side(mask[[0, 2]], causal=True).passed
    assert not c.check_padding_side(mask, expected="left").passed  # row 0 is right-padded


def test_data_passes_says_how_many_steps_the_run_needs() -> None:
    r = c.check_data_passes(steps=100, batch_size=32, unique_samples=10_000, min_passes=3)
    assert not r.passed and r.mistake_ids == ("M-011",)
    assert (
        "3200 samples seen over 10000 unique: 0.32 passes < min_passes 3 (needs 938 steps)"
        in r.evidence
    )
    assert c.check_data_passes(steps=938, batch_size=32, unique_samples=10_000, min_passes=3).passed


def test_run_checks_prints_each_line_and_alerts_each_fail_under_the_harness(
    batch: Any, tmp_path: Path
) -> None:
    out = io.StringIO()
    with Reporter(tmp_path / "metrics.jsonl") as rep:
        results = c.run_checks(LM(cut=True), batch, ce, reporter=rep, out=out)
    assert [r.name for r in results] == ["vocab_size", "gradient_flow", "loss_weighting"]
    assert out.getvalue().splitlines() == [r.line() for r in results]
    alerts = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (alert,) = alerts
    assert alert["event"] == "alert" and alert["level"] == "error"
    assert alert["check"] == "gradient_flow" and alert["mistake"] == "M-032"
    assert alert["text"] == results[1].line()
    with pytest.raises(c.ChecksFailed, match="FAIL gradient_flow"):
        c.raise_on_fail(results, "abort")
    c.raise_on_fail(results, "warn")


def test_named_checks_must_run_and_a_bad_config_is_one_line() -> None:
    with pytest.raises(c.CheckError, match="no loss function"):
        c.run_checks(
            LM(), torch.tensor([[1]]), None, config=c.CheckConfig(checks=("gradient_flow",))
        )
    with pytest.raises(ValueError, match="checks: unknown check 'gradient'"):
        c.CheckConfig(checks=("gradient",))
    with pytest.raises(ValueError, match="on_fail: expected one of abort, warn"):
        c.CheckConfig(on_fail="stop")


# -- the callbacks' shared core -----------------------------------------------------------


def test_a_live_lr_survives_a_lambda_schedule_and_keeps_its_shape() -> None:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / 10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert set_lr([opt], [sched], 1.0) == pytest.approx(10.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4)  # base 1.0 x the schedule's 0.4
    assert sched.get_last_lr() == pytest.approx([0.4])


def test_controls_apply_a_good_lr_and_reject_a_bad_one_once(tmp_path: Path) -> None:
    controls = tmp_path / "controls.json"
    rep = Reporter(tmp_path / "metrics.jsonl", controls)
    link = JobLink(rep)
    got: list[float] = []

    def take(value: float) -> float:
        got.append(value)
        return value

    handlers = {"lr": take}
    controls.write_text('{"lr": 0.5}')
    assert link.controls(handlers, {}, share=lambda v: v) == {"lr": 0.5}
    controls.write_text('{"lr": -1, "eval_every": 3}')
    from harness.job._callback import positive_lr

    assert (
        link.controls({"lr": positive_lr}, {"eval_every": "not steered"}, share=lambda v: v) == {}
    )
    rep.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["applied"] == {"lr": 0.5}
    assert rows[1]["applied"] == {}
    assert rows[1]["rejected"] == {
        "lr": "lr must be a positive finite number, got -1",
        "eval_every": "not steered",
    }
    assert got == [0.5]


def test_outside_the_harness_the_callbacks_touch_nothing() -> None:
    import lightning.pytorch as pl

    from harness.job.lightning import HarnessCallback

    cb = HarnessCallback(reporter=Reporter(environ={}))
    trainer = mock.create_autospec(pl.Trainer, instance=True, spec_set=True)
    module = mock.create_autospec(pl.LightningModule, instance=True)
    cb.setup(trainer, module, "fit")
    cb.on_train_start(trainer, module)
    cb.on_train_batch_start(trainer, module, None, 0)
    cb.on_train_batch_end(trainer, module, None, None, 0)
    cb.on_train_end(trainer, module)
    assert trainer.mock_calls == [] and module.mock_calls == []
    assert cb.results == []
