"""neuraloperator's FNO: the SpectralConv rule cuts the hidden width (the spectral weights'
input and output channels, the skips and channel MLPs around them) with the retained
Fourier modes untouched; exact under every gate setting, at another batch and grid size."""

import pytest
import torch

import lumos_fx
from support import GATE_SETTINGS, max_rel_error, set_gates

neuralop = pytest.importorskip("neuralop")


def _fno(dims, **kw):
    from neuralop.models import FNO

    torch.manual_seed(0)
    return FNO(n_modes=(4,) * dims, in_channels=2, out_channels=1, hidden_channels=12, n_layers=2, **kw)


@pytest.mark.parametrize("dims,size,other", [(1, 24, 40), (2, 12, 20)])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_the_hidden_width_of_an_fno_is_cut_exactly(dims, size, other, setting, tmp_path):
    model, x = _fno(dims), torch.randn(2, 2, *(size,) * dims)
    wrapped = lumos_fx.instrument(model, (x,))
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(x), model.eval()(x)) < 1e-5
    assert any("fno_blocks.convs.0" in r.layers for r in lumos_fx.summary(wrapped).groups)
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    if setting == "closed":  # nothing reaches the output: the FNO is the constant it computes
        assert not hasattr(pruned, "fno_blocks")
    else:
        weight = pruned.get_parameter("fno_blocks.convs.0.weight.tensor")
        assert weight.shape[2:] == model.get_parameter("fno_blocks.convs.0.weight.tensor").shape[2:]  # the modes
    if setting == "random":
        assert weight.shape[0] < 12 or weight.shape[1] < 12
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    y = torch.randn(3, 2, *(other,) * dims)  # another batch and grid size
    with torch.no_grad():
        for z in (x, y):
            assert max_rel_error(pruned(z), wrapped.eval()(z)) < 1e-4
    if setting in ("random", "half"):
        lumos_fx.export(pruned, tmp_path / "m")
        with torch.no_grad():
            assert max_rel_error(lumos_fx.load(tmp_path / "m")(y), pruned(y)) < 1e-5


def test_a_factorised_spectral_weight_is_kept_with_the_reason():
    model, x = _fno(2, factorization="tucker", rank=0.5), torch.randn(2, 2, 12, 12)
    wrapped = lumos_fx.instrument(model, (x,))
    reasons = " ".join(lumos_fx.summary(wrapped).kept_whole.values())
    assert "tucker factorised weight is kept whole" in reasons
    set_gates(wrapped, "random", 0)
    pruned = lumos_fx.prune(wrapped)
    with torch.no_grad():
        y = torch.randn(3, 2, 20, 20)
        assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-4
