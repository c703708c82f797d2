"""Config(frozen=...): fine-tuning a pretrained model with its backbone fixed. The frozen
weights do not move, the gates train, and prune() cuts the frozen layers too."""

import pytest
import torch
from torch import nn

import lumos_fx
from lumos_fx.errors import InputError
from models_zoo.transformer.models import SequenceRegressor, ViT
from support import max_rel_error


def test_frozen_weights_stay_and_gates_train():
    torch.manual_seed(0)
    model = ViT(image=16, patch=4, dim=32, depth=2, heads=4, n_classes=3)
    x = torch.randn(8, 3, 16, 16)
    wrapped = lumos_fx.instrument(model, (x[:2],), config=lumos_fx.Config(frozen=["patch_embed", "blocks"]))
    frozen = {n: p.detach().clone() for n, p in wrapped.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("patch_embed.", "blocks.")) for n in frozen)
    gates_before = {n: g.log_alpha.detach().clone() for n, g in lumos_fx.gates(wrapped).items()}
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, lr=1e-2))
    wrapped.train()
    for _ in range(3):
        loss = nn.functional.cross_entropy(wrapped(x), torch.arange(8) % 3) + lumos_fx.complexity_loss(wrapped)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in wrapped.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert not torch.equal(wrapped.head.weight, model.head.weight)  # the head trains
    assert all(not torch.equal(g.log_alpha, gates_before[n]) for n, g in lumos_fx.gates(wrapped).items())
    assert all(p.requires_grad for p in model.parameters())  # the user's model is untouched
    with torch.no_grad():
        lumos_fx.gates(wrapped)["blocks.0.attn.qkv"].log_alpha[:2] = -5.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("blocks.0.attn.qkv").out_features == 3 * 2 * 8  # a frozen layer, cut
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-4


def test_written_out_attention_stays_frozen_with_its_module():
    model = SequenceRegressor(n_features=5, length=6, dim=16, depth=1)
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 6, 5),), config=lumos_fx.Config(frozen=[nn.TransformerEncoder]))
    assert not wrapped.get_parameter("encoder.layers.0.self_attn.q_proj.weight").requires_grad
    assert wrapped.get_parameter("inp.weight").requires_grad


def test_unknown_frozen_names_are_an_error_that_lists_the_modules():
    with pytest.raises(InputError, match="does not have.*'backbone'.*top level: "):
        lumos_fx.instrument(nn.Sequential(nn.Linear(3, 4)), (torch.randn(2, 3),),
                            config=lumos_fx.Config(frozen=["backbone"]))


def test_the_fine_tuning_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from models_zoo.transformer import finetune

    monkeypatch.setenv("LUMOS_DATA", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["finetune", "--steps", "40"])
    finetune.main()
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("task B test accuracy"))
    gated, pruned = (float(v.split()[-1]) for v in line.split(":")[1].split(","))
    assert gated == pruned  # the cut model classifies the test set exactly as the gated one
    assert "87,168 backbone weights frozen" in out and "parameters" in out
