"""nn.MultiheadAttention is written out as q/k/v/out projections and
scaled_dot_product_attention: same outputs, and its heads become prunable."""

import pytest
import torch
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, max_rel_error, set_gates


class UsesMHA(nn.Module):
    def __init__(self, batch_first=True, cross=False, bias=True, mask=None, padding=False, dropout=0.0):
        super().__init__()
        self.batch_first, self.cross, self.mask, self.padding = batch_first, cross, mask, padding
        s = 7 if cross else 5
        self.register_buffer("bool_mask", torch.ones(5, s, dtype=torch.bool).triu(1))
        self.register_buffer("float_mask", torch.linspace(-1, 0, 2 * 4 * 5 * s).view(8, 5, s))
        padding_mask = torch.zeros(2, s, dtype=torch.bool)
        padding_mask[:, -1] = True
        self.register_buffer("padding_mask", padding_mask)
        self.inp = nn.Linear(6, 16)
        kdim = 5 if cross else None
        self.attn = nn.MultiheadAttention(16, 4, bias=bias, batch_first=batch_first, kdim=kdim, vdim=kdim,
                                          dropout=dropout)
        self.out = nn.Linear(16, 2)

    def forward(self, x, memory):
        h = torch.relu(self.inp(x))
        if not self.batch_first:
            h, memory = h.transpose(0, 1), memory.transpose(0, 1)
        kv = memory if self.cross else h
        attn_mask = {"bool": self.bool_mask, "float": self.float_mask}.get(self.mask)
        padding = self.padding_mask if self.padding else None
        a, _ = self.attn(h, kv, kv, key_padding_mask=padding, attn_mask=attn_mask, need_weights=False)
        if not self.batch_first:
            a = a.transpose(0, 1)
        return self.out(a)


CASES = [dict(), dict(batch_first=False), dict(cross=True), dict(bias=False), dict(mask="bool"),
         dict(mask="float"), dict(padding=True), dict(cross=True, batch_first=False, mask="bool", padding=True)]


def inputs(batch=2, n=5):
    return torch.randn(batch, n, 6), torch.randn(batch, n + 2, 5)  # masks fix the batch (2) and lengths


@pytest.mark.parametrize("case", range(len(CASES)))
def test_written_out_attention_computes_what_the_module_does(case):
    torch.manual_seed(case)
    model = UsesMHA(**CASES[case]).eval()
    x = inputs()
    if not CASES[case].get("cross"):
        x = (x[0], torch.randn(2, 5, 5))
    wrapped = lumos_fx.instrument(model, x)
    assert "scaled_dot_product_attention" in wrapped.code and "self.attn(" not in wrapped.code
    if CASES[case].get("mask") == "float":  # a (B * heads, L, S) mask: one per head
        assert "differs per head" in lumos_fx.summary(wrapped).kept_whole["attn.q_proj"]
    else:
        assert lumos_fx.gates(wrapped)["attn.q_proj"].n == 4  # one unit per head
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(*x), model(*x)) <= 1e-5
    for setting in GATE_SETTINGS:
        set_gates(wrapped, setting, case)
        pruned = lumos_fx.prune(wrapped)
        with torch.no_grad():
            assert max_rel_error(pruned(*x), wrapped.eval()(*x)) <= 1e-4
    assert "scaled_dot_product_attention" in pruned.code or "attn" not in pruned.code


def test_a_closed_head_leaves_the_projections():
    torch.manual_seed(0)
    x = inputs()
    wrapped = lumos_fx.instrument(UsesMHA(cross=True), x)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["attn.q_proj"].log_alpha[[2]] = -5.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("attn.q_proj").out_features == 12
    assert pruned.get_submodule("attn.k_proj").weight.shape == (12, 5)
    assert pruned.get_submodule("attn.out_proj").in_features == 12
    assert "view(size, size_1, 3, 4)" in pruned.code
    x2 = inputs(3, 4)  # no masks: any batch and length
    with torch.no_grad():
        assert max_rel_error(pruned(*x2), wrapped.eval()(*x2)) <= 1e-4


def test_attention_dropout_is_written_out_as_a_dropout_module():
    torch.manual_seed(3)
    x = inputs()
    model = UsesMHA(dropout=0.1, cross=True).eval()
    wrapped = lumos_fx.instrument(model, x)
    assert "self.attn.attn_drop(softmax)" in wrapped.code and lumos_fx.gates(wrapped)["attn.q_proj"].n == 4
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(*x), model(*x)) <= 1e-5
    set_gates(wrapped, "half", 3)
    with torch.no_grad():
        assert max_rel_error(lumos_fx.prune(wrapped)(*x), wrapped.eval()(*x)) <= 1e-4


def test_attention_whose_weights_are_read_stays_one_op_and_is_kept():
    class Weights(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(6, 16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x):
            h = self.inp(x)
            out, weights = self.attn(h, h, h)
            return out.sum(-1) + weights.sum(-1)

    wrapped = lumos_fx.instrument(Weights(), (torch.randn(2, 5, 6),))
    assert "self.attn(" in wrapped.code
    assert "MultiheadAttention" in lumos_fx.summary(wrapped).kept_whole["inp"]
