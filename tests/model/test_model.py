"""The model: shapes, causality, and the gradient-flow check that preflight runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.model import BitGPT, GPTConfig, check_gradient_flow


def _batch(seq_len: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (4, seq_len, 128), generator=g).float()
    y = torch.randint(0, 2, (4, seq_len, 128), generator=g).float()
    return x, y


def test_logits_per_bit_per_position() -> None:
    model = BitGPT(GPTConfig.tiny())
    assert model(_batch()[0]).shape == (4, 8, 128)


def test_a_position_never_sees_the_future() -> None:
    torch.manual_seed(0)
    model = BitGPT(GPTConfig.tiny()).eval()
    x = _batch()[0]
    changed = x.clone()
    changed[:, 5:] = 1 - changed[:, 5:]
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_the_input_projection_exists_even_at_width_128() -> None:
    model = BitGPT(GPTConfig(d_model=128, n_layers=1, n_heads=4, max_seq_len=8))
    assert isinstance(model.inp, torch.nn.Linear)


def test_gradient_flow_passes_on_the_real_model() -> None:
    torch.manual_seed(0)
    assert check_gradient_flow(BitGPT(GPTConfig.tiny()), _batch()) == []


def test_gradient_flow_names_a_frozen_parameter() -> None:
    model = BitGPT(GPTConfig.tiny())
    model.get_parameter("blocks.0.mlp.up.weight").requires_grad_(False)
    assert check_gradient_flow(model, _batch()) == ["blocks.0.mlp.up.weight"]


def test_gradient_flow_names_a_detached_parameter() -> None:
    model = BitGPT(GPTConfig.tiny())
    head = model.head

    def detached_head(x: torch.Tensor) -> torch.Tensor:  # a bug: weight cut out of the graph
        return F.linear(x, head.weight.detach(), head.bias)

    head.forward = detached_head  # type: ignore[method-assign,assignment]
    assert check_gradient_flow(model, _batch()) == ["head.weight"]


def test_gradient_flow_names_a_parameter_with_zero_gradient() -> None:
    model = BitGPT(GPTConfig.tiny())
    with torch.no_grad():  # a zeroed head blocks every gradient below it except its own
        model.head.weight.zero_()
    bad = check_gradient_flow(model, _batch())
    assert "inp.weight" in bad
    assert "head.weight" not in bad
