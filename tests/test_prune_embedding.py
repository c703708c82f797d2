"""nn.Embedding and F.embedding: the embedding dim is a producer; summed embeddings,
positional parameters and class tokens are cut consistently with it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates


class Molecule(nn.Module):
    """One embedding per atom feature, summed (as molecule encoders do), plus a learned
    position table read in forward and a bond table looked up with F.embedding."""

    def __init__(self, dim=16):
        super().__init__()
        self.atom = nn.ModuleList(nn.Embedding(n, dim) for n in (10, 4, 6))
        self.pos = nn.Parameter(torch.randn(1, 5, dim))
        self.bond = nn.Parameter(torch.randn(7, dim))
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.mlp = nn.Linear(dim, 32)
        self.out = nn.Linear(32, 1)

    def forward(self, feats, bonds):
        h = sum(e(feats[..., i]) for i, e in enumerate(self.atom)) + self.pos + F.embedding(bonds, self.bond)
        h = torch.cat([self.cls.expand(h.size(0), -1, -1), h], dim=1)
        return self.out(F.silu(self.mlp(h))).mean(1)


def inputs(batch, gen=None):
    feats = torch.stack([torch.randint(0, n, (batch, 5), generator=gen) for n in (10, 4, 6)], -1)
    return feats, torch.randint(0, 7, (batch, 5), generator=gen)


@pytest.mark.parametrize("setting", GATE_SETTINGS)
@pytest.mark.parametrize("seed", range(3))
def test_summed_embeddings_are_one_group_cut_consistently(setting, seed):
    torch.manual_seed(seed)
    wrapped = lumos_fx.instrument(Molecule(), inputs(4))
    assert sorted(lumos_fx.gates(wrapped)) == ["atom.0", "mlp"]  # the embedding dim is one group
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    x = inputs(3, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert max_rel_error(pruned(*x), wrapped.eval()(*x)) <= 1e-4
    kept = int((lumos_fx.gates(wrapped)["atom.0"].eval_value() > 0).sum())
    if 0 < kept:
        for i in range(3):
            assert pruned.get_submodule(f"atom.{i}").embedding_dim == kept
        assert pruned.pos.shape == (1, 5, kept) and pruned.bond.shape == (7, kept)
        assert pruned.cls.shape == (1, 1, kept) and pruned.mlp.in_features == kept


def test_embedding_to_fc_keeps_the_columns_the_consumer_gates_keep(tmp_path):
    """The paper's example: a 300-dim embedding whose consumer keeps 189 inputs."""

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 300)
            self.fc = nn.Linear(300, 8)

        def forward(self, tokens):
            return self.fc(self.emb(tokens)).sum(1)

    torch.manual_seed(0)
    tokens = torch.randint(0, 50, (4, 6))
    wrapped = lumos_fx.instrument(Encoder(), (tokens,))
    closed = torch.randperm(300)[:111]
    with torch.no_grad():
        lumos_fx.gates(wrapped)["emb"].log_alpha[closed] = -5.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.emb.weight.shape == (50, 189) and pruned.fc.in_features == 189
    assert count_params(pruned) == 50 * 189 + 189 * 8 + 8
    keep = torch.ones(300, dtype=torch.bool)
    keep[closed] = False
    torch.testing.assert_close(pruned.emb.weight, wrapped.emb.weight[:, keep])
    with torch.no_grad():
        t = torch.randint(0, 50, (3, 6))
        assert max_rel_error(pruned(t), wrapped.eval()(t)) <= 1e-4
    assert "nn.Embedding(50, 189)" in (lumos_fx.export(pruned, tmp_path) / "model.py").read_text()


def test_a_literal_channel_count_in_expand_is_rewritten():
    class Token(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(9, 6)
            self.cls = nn.Parameter(torch.randn(1, 1, 6))
            self.fc = nn.Linear(6, 2)

        def forward(self, tokens):
            h = torch.cat([self.cls.expand(tokens.size(0), 1, 6), self.emb(tokens)], dim=1)
            return self.fc(h)

    tokens = torch.randint(0, 9, (2, 4))
    wrapped = lumos_fx.instrument(Token(), (tokens,))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["cls"].log_alpha[[0, 2]] = -5.0  # the group is named after its first producer
    pruned = lumos_fx.prune(wrapped)
    assert "expand(size, 1, 4)" in pruned.code
    with torch.no_grad():
        t = torch.randint(0, 9, (5, 4))
        assert max_rel_error(pruned(t), wrapped.eval()(t)) <= 1e-4


def test_a_table_tied_to_an_output_projection_keeps_its_columns():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 12)
            self.mix = nn.Linear(12, 12)

        def forward(self, tokens):
            return self.mix(self.emb(tokens)) @ self.emb.weight.t()  # logits over the vocabulary

    wrapped = lumos_fx.instrument(Tied(), (torch.randint(0, 20, (2, 5)),))
    assert "emb" not in lumos_fx.gates(wrapped)
    set_gates(wrapped, "half", 0)
    assert "emb" in lumos_fx.summary(wrapped).kept_whole
