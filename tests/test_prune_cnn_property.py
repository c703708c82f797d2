"""The invariant on random CNNs: prune(w)(x) == w.eval()(x); parameters and FLOPs drop by
exactly what the closed gates control."""

import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lumos_fx
from cnn_programs import build, cnn_programs, count_flops, expected_flops
from support import GATE_SETTINGS, count_params, expected_params_after, max_rel_error, set_gates

EXAMPLES = int(os.environ.get("LUMOS_CNN_EXAMPLES", os.environ.get("LUMOS_EXAMPLES", "150")))


@settings(max_examples=EXAMPLES)
@given(program=cnn_programs(), setting=st.sampled_from(GATE_SETTINGS), seed=st.integers(0, 2**16),
       shrink=st.booleans())
def test_pruned_cnn_equals_gated(program, setting, seed, shrink):
    model, wrapped, fresh = build(program, seed)
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped, shrink_inputs=shrink)
    x = fresh(5)  # another batch size than the example's
    with torch.no_grad():
        ref = wrapped.eval()(x)
        if shrink and pruned.kept_feature_indices:
            (kept,) = pruned.kept_feature_indices.values()
            x = x[:, kept]
        out = pruned(x)
    assert out.shape == ref.shape
    assert max_rel_error(out, ref) <= 1e-4, f"max rel error {max_rel_error(out, ref):.3g}"
    if setting == "open":
        for name, p in pruned.named_parameters():
            assert p.shape == model.get_parameter(name).shape, name


@settings(max_examples=EXAMPLES // 2)
@given(program=cnn_programs(smooth_only=True, norms=("bn", "gn")), setting=st.sampled_from(GATE_SETTINGS),
       seed=st.integers(0, 2**16))
def test_cnn_parameters_and_flops_drop_by_what_closed_gates_control(program, setting, seed):
    """Every tensor reaches the head (sink_all), so the only channels a correct cut removes
    are those closed gates cut off; the oracles find them from gradients, not from lumos_fx."""
    _, wrapped, fresh = build(program, seed, sink_all=True)
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    x = fresh(4)
    assert count_params(pruned) == expected_params_after(wrapped, x, seed)
    assert count_flops(pruned, x) == expected_flops(wrapped, x, seed)
