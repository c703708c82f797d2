"""The reference ViT: heads and MLP widths are cut, and the cut model computes what the
gated one computes."""

import pytest
import torch

import lumos_fx
from models_zoo.transformer.models import ViT
from models_zoo.vision.gates import close_fraction
from support import count_params, max_rel_error


@pytest.mark.parametrize("attention", ["hand", "sdpa", "mha"])
@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_vit_heads_and_mlp_widths_are_cut(attention, fraction):
    torch.manual_seed(0)
    model = ViT(image=16, patch=4, dim=32, depth=2, heads=4, sdpa=attention == "sdpa", mha=attention == "mha")
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 3, 16, 16),))
    proj = "q_proj" if attention == "mha" else "qkv"
    gates = {name: g.n for name, g in lumos_fx.gates(wrapped).items()}
    dims = ({f"blocks.{b}.attn.q_proj+blocks.{b}.attn.k_proj q·k dims": 8 for b in range(2)}
            | {f"blocks.{b}.attn.v_proj v dims": 8 for b in range(2)} if attention == "mha"
            else {f"blocks.{b}.attn.qkv head dims": 8 for b in range(2)})
    assert gates == {"x": 3, f"blocks.0.attn.{proj}": 4, "blocks.0.mlp.0": 128, f"blocks.1.attn.{proj}": 4,
                     "blocks.1.mlp.0": 128} | dims
    close_fraction(wrapped, fraction, seed=1)
    pruned = lumos_fx.prune(wrapped)
    heads, head_dims = round(fraction * 4), round(fraction * 8)
    for b in range(2):
        width = pruned.get_submodule(f"blocks.{b}.attn.{proj}").out_features
        assert width == (4 - heads) * (8 - head_dims) * (1 if attention == "mha" else 3)
        assert pruned.get_submodule(f"blocks.{b}.mlp.0").out_features == 128 - round(fraction * 128)
    assert count_params(pruned) < lumos_fx.summary(pruned).params_before * (1 - fraction / 2)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-4


def test_the_vit_job_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from models_zoo.transformer import __main__ as job

    monkeypatch.setenv("LUMOS_DATA", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["transformer", "--steps", "30", "--ramp", "10", "--attention", "hand"])
    job.main()
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("test accuracy"))
    gated, pruned = (float(v.split()[-1]) for v in line.split(":")[1].split(",")[1:])
    assert gated == pruned
    assert "blocks.2.attn.qkv head dims" in out and "pruned / dense" in out
