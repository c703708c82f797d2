"""The invariant on random MLPs: prune(w)(x) == w.eval()(x), closed channels physically gone."""

import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lumos_fx
from support import GATE_SETTINGS, ProgramMLP, assert_equivalent, count_params, expected_params_after, programs, set_gates

EXAMPLES = int(os.environ.get("LUMOS_EXAMPLES", "150"))  # LUMOS_EXAMPLES=2000 for a long run


def _build(program, seed, sink_all=False):
    n_in, steps, n_out = program
    torch.manual_seed(seed)
    model = ProgramMLP(n_in, steps, n_out, sink_all)
    x = torch.randn(8, n_in)
    return model, lumos_fx.instrument(model, (x,)), n_in


@settings(max_examples=2 * EXAMPLES)
@given(program=programs(), setting=st.sampled_from(GATE_SETTINGS), seed=st.integers(0, 2**16),
       shrink=st.booleans())
def test_pruned_equals_gated(program, setting, seed, shrink):
    model, wrapped, n_in = _build(program, seed)
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped, shrink_inputs=shrink)
    # Fresh inputs, another batch size: the cut must not depend on example_inputs.
    assert_equivalent(wrapped, pruned, torch.randn(13, n_in), shrink_inputs=shrink)
    if setting == "open":
        # Nothing closed, nothing cut: every layer left keeps its original shape.
        for name, p in pruned.named_parameters():
            assert p.shape == model.get_parameter(name).shape, name


@settings(max_examples=EXAMPLES)
@given(program=programs(smooth_only=True, ops=("linear", "act", "dropout", "add", "mul", "cat", "split",
                                                 "bias", "scale")),
       setting=st.sampled_from(GATE_SETTINGS), seed=st.integers(0, 2**16))
def test_parameters_drop_by_what_closed_gates_control(program, setting, seed):
    """Every tensor reaches the head (sink_all), so the only channels a correct cut removes
    are those closed gates cut off; the oracle finds them from gradients, not from lumos_fx."""
    model, wrapped, n_in = _build(program, seed, sink_all=True)
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    assert count_params(pruned) == expected_params_after(wrapped, n_in, seed)
