"""neuraloperator's FNO: the SpectralConv rule cuts the hidden width (the spectral weights'
input and output channels, or the channel rows of their Tucker, CP or TT factors, and the
skips and channel MLPs around them) with the retained Fourier modes untouched; exact under
every gate setting, at another batch and grid size, and exported."""

import pytest
import torch

import lumos_fx
from support import GATE_SETTINGS, max_rel_error, set_gates

neuralop = pytest.importorskip("neuralop")


def _fno(dims, **kw):
    from neuralop.models import FNO

    torch.manual_seed(0)
    return FNO(n_modes=(4,) * dims, in_channels=2, out_channels=1, hidden_channels=12, n_layers=2, **kw)


def _mode_shapes(conv):
    """The shapes of what holds conv's retained modes: the dense weight's trailing dims, the
    factors after the two channel factors (one after the channel factor if separable)."""
    weight = conv.weight
    if type(weight).__name__ == "DenseTensor":
        return weight.tensor.shape[1 if conv.separable else 2:]
    return [f.shape for f in list(weight.factors)[1 if conv.separable else 2:]]


def _check_cut(model, x, y, setting, tmp_path):
    """Gates of `model` set to `setting`: the hidden width is cut, the modes untouched, the
    pruned FNO equals the gated one at `x` and at `y` (another batch and grid size), and its
    export loads and computes the same."""
    wrapped = lumos_fx.instrument(model, (x,))
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(x), model.eval()(x)) < 1e-5
    assert any("fno_blocks.fno_skips.0.conv" in r.layers for r in lumos_fx.summary(wrapped).groups)  # the width
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    if setting == "closed":  # nothing reaches the output: the FNO is the constant it computes
        assert not hasattr(pruned, "fno_blocks")
    else:
        conv, original = pruned.get_submodule("fno_blocks.convs.0"), model.get_submodule("fno_blocks.convs.0")
        assert _mode_shapes(conv) == _mode_shapes(original)
    if setting == "random":
        assert conv.in_channels < 12 or conv.out_channels < 12
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for z in (x, y):
            assert max_rel_error(pruned(z), wrapped.eval()(z)) < 1e-4
    if setting in ("random", "half"):
        lumos_fx.export(pruned, tmp_path / "m")
        with torch.no_grad():
            assert max_rel_error(lumos_fx.load(tmp_path / "m")(y), pruned(y)) < 1e-5


@pytest.mark.parametrize("dims,size,other", [(1, 24, 40), (2, 12, 20)])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_the_hidden_width_of_an_fno_is_cut_exactly(dims, size, other, setting, tmp_path):
    _check_cut(_fno(dims), torch.randn(2, 2, *(size,) * dims), torch.randn(3, 2, *(other,) * dims), setting, tmp_path)


@pytest.mark.parametrize("factorization,implementation,separable", [
    ("tucker", "reconstructed", False), ("tucker", "factorized", True), ("cp", "factorized", False),
    ("cp", "reconstructed", True), ("tt", "reconstructed", False), ("tt", "factorized", True), ("dense", "factorized", True)])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_factorised_and_separable_spectral_weights_are_cut_on_their_channel_factors(
        factorization, implementation, separable, setting, tmp_path):
    model = _fno(2, factorization=factorization, rank=0.5, implementation=implementation, separable=separable)
    _check_cut(model, torch.randn(2, 2, 12, 12), torch.randn(3, 2, 20, 16), setting, tmp_path)



def test_the_input_features_of_an_fno_with_its_grid_embedding_are_selected():
    torch.manual_seed(0)
    from neuralop.models import FNO

    model, x = FNO(n_modes=(4, 4), in_channels=3, out_channels=1, hidden_channels=8, n_layers=1), torch.randn(2, 3, 12, 12)
    wrapped = lumos_fx.instrument(model, (x,))
    gate = lumos_fx.gates(wrapped)["x"]
    assert gate.log_alpha.numel() == 3 + 2  # the features, and the two grid coordinates beside them
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([5.0, -5.0, 5.0, 5.0, -5.0]))
    pruned = lumos_fx.prune(wrapped)
    report = lumos_fx.summary(wrapped)
    assert report.features["x"] == (["x[0]", "x[2]"], ["x[1]"])
    assert pruned.get_submodule("lifting.fcs.0").in_channels == 3  # two features and one coordinate
    with torch.no_grad():
        y = torch.randn(3, 3, 20, 16)
        assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-4
