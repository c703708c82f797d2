"""The reference ViT: heads and MLP widths are cut, and the cut model computes what the
gated one computes."""

import pytest
import torch

import lumos_fx
from models_zoo.transformer.models import ViT
from models_zoo.vision.gates import close_fraction
from support import count_params, max_rel_error


@pytest.mark.parametrize("sdpa", [False, True])
@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_vit_heads_and_mlp_widths_are_cut(sdpa, fraction):
    torch.manual_seed(0)
    model = ViT(image=16, patch=4, dim=32, depth=2, heads=4, sdpa=sdpa)
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 3, 16, 16),))
    gates = {name: g.n for name, g in lumos_fx.gates(wrapped).items()}
    assert gates == {"x": 3, "blocks.0.attn.qkv": 4, "blocks.0.mlp.0": 128, "blocks.1.attn.qkv": 4,
                     "blocks.1.mlp.0": 128}
    close_fraction(wrapped, fraction, seed=1)
    pruned = lumos_fx.prune(wrapped)
    heads = round(fraction * 4)
    for b in range(2):
        assert pruned.get_submodule(f"blocks.{b}.attn.qkv").out_features == 3 * (4 - heads) * 8
        assert pruned.get_submodule(f"blocks.{b}.mlp.0").out_features == 128 - round(fraction * 128)
    assert count_params(pruned) < lumos_fx.summary(pruned).params_before * (1 - fraction / 2)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-4
