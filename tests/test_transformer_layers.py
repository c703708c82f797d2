"""nn.TransformerEncoderLayer / nn.TransformerEncoder are traced through their own
computation: heads, feed-forward widths and input features are cut; outputs unchanged."""

import pytest
import torch

import lumos_fx
from models_zoo.transformer.models import SequenceRegressor
from support import GATE_SETTINGS, max_rel_error, set_gates


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("padding", [False, True])
def test_encoder_heads_and_widths_are_cut(norm_first, dropout, padding):
    torch.manual_seed(0)
    model = SequenceRegressor(n_features=5, length=6, dim=16, depth=2, heads=4, dropout=dropout,
                              norm_first=norm_first).eval()
    x = torch.randn(2, 6, 5)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, -2:] = True
    args = (x, mask) if padding else (x,)
    wrapped = lumos_fx.instrument(model, args)
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(*args), model(*args)) <= 1e-5
    gates = {name: g.n for name, g in lumos_fx.gates(wrapped).items()}
    for i in range(2):
        assert gates[f"encoder.layers.{i}.self_attn.q_proj"] == 4 and gates[f"encoder.layers.{i}.linear1"] == 64
    assert gates["x"] == 5
    for setting in GATE_SETTINGS:
        set_gates(wrapped, setting, 2)
        pruned = lumos_fx.prune(wrapped)
        with torch.no_grad():
            assert max_rel_error(pruned(*args), wrapped.eval()(*args)) <= 1e-4


def test_the_instrumented_encoder_trains_its_gates_with_dropout_on():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(SequenceRegressor(n_features=5, length=6, dim=16, depth=1), (torch.randn(2, 6, 5),))
    wrapped.train()
    loss = wrapped(torch.randn(4, 6, 5)).pow(2).mean() + lumos_fx.complexity_loss(wrapped)
    loss.backward()
    assert all(g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0
               for g in lumos_fx.gates(wrapped).values())
    assert "attn_drop" in wrapped.code  # dropout on the attention weights, as the module applies it


def test_a_closed_head_of_an_encoder_layer():
    torch.manual_seed(1)
    model = SequenceRegressor(n_features=5, length=6, dim=16, depth=1, heads=4, dropout=0.0)
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 6, 5),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["encoder.layers.0.self_attn.q_proj"].log_alpha[[0]] = -5.0
        lumos_fx.gates(wrapped)["encoder.layers.0.linear1"].log_alpha[:40] = -5.0
    pruned = lumos_fx.prune(wrapped)
    attn = "encoder.layers.0.self_attn"
    assert pruned.get_submodule(f"{attn}.q_proj").out_features == 12
    assert pruned.get_submodule(f"{attn}.out_proj").in_features == 12
    assert pruned.get_submodule("encoder.layers.0.linear1").out_features == 24
    assert "scaled_dot_product_attention" in pruned.code
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-4
