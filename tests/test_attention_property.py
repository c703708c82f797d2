"""Generated transformer blocks: attention written in every form the rules know (separate
or fused projections, indexing or unbind, SDPA or matmul-softmax-matmul, the scale on the
scores or on q, heads merged by reshape or flatten, nn.MultiheadAttention either layout),
with random head counts and widths, under random gates on heads, head dims, MLP widths and
input features. prune(w)(x) == w.eval()(x) on a batch of another size and length."""

import os

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import GATE_SETTINGS, max_rel_error, set_gates
from torch import nn

import lumos_fx

EXAMPLES = int(os.environ.get("LUMOS_ATTENTION_EXAMPLES", "40"))


class Attention(nn.Module):
    def __init__(self, d, heads, form):
        super().__init__()
        self.h, self.dh, self.form = heads, d // heads, form
        self.scale = self.dh ** -0.5
        if form["proj"] == "fused":
            self.qkv = nn.Linear(d, 3 * d, bias=form["bias"])
        else:
            self.q, self.k, self.v = (nn.Linear(d, d, bias=form["bias"]) for _ in range(3))
        self.out = nn.Linear(d, d)

    def forward(self, x):
        B, N, C = x.shape
        f = self.form
        if f["proj"] == "fused":
            qkv = self.qkv(x).reshape(B, N, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0) if f["split"] == "unbind" else (qkv[0], qkv[1], qkv[2])
        else:
            q, k, v = (p(x).view(B, N, self.h, self.dh).transpose(1, 2) for p in (self.q, self.k, self.v))
        if f["op"] == "sdpa":
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            s = (q * self.scale) @ k.transpose(-2, -1) if f["scale_q"] else (q @ k.transpose(-2, -1)) * self.scale
            a = s.softmax(dim=-1) @ v
        a = a.transpose(1, 2)
        a = a.flatten(2) if f["merge"] == "flatten" else a.reshape(B, N, C)
        return self.out(a)


class MHA(nn.Module):
    def __init__(self, d, heads, form):
        super().__init__()
        self.batch_first = form["batch_first"]
        self.attn = nn.MultiheadAttention(d, heads, bias=form["bias"], batch_first=self.batch_first,
                                          dropout=0.1 if form["dropout"] else 0.0)

    def forward(self, x):
        h = x if self.batch_first else x.transpose(0, 1)
        a, _ = self.attn(h, h, h, need_weights=False)
        return a if self.batch_first else a.transpose(0, 1)


class Model(nn.Module):
    def __init__(self, n_in, d, blocks):
        super().__init__()
        self.embed = nn.Linear(n_in, d)
        self.attns = nn.ModuleList(MHA(d, h, f) if f["proj"] == "mha" else Attention(d, h, f) for h, f, _ in blocks)
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(d, m), nn.GELU(), nn.Linear(m, d)) if m else nn.Identity()
                                  for _, _, m in blocks)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        h = self.embed(x)
        for attn, mlp in zip(self.attns, self.mlps):
            h = h + attn(h)
            h = h + mlp(h)
        return self.head(h.mean(1))


@st.composite
def models(draw):
    heads = draw(st.sampled_from([2, 4]))  # one head: its dims are the channels (no head split)
    d = heads * draw(st.sampled_from([2, 3, 4]))
    blocks = []
    for _ in range(draw(st.integers(1, 2))):
        form = {"proj": draw(st.sampled_from(["separate", "fused", "mha"])), "bias": draw(st.booleans()),
                "split": draw(st.sampled_from(["unbind", "getitem"])), "op": draw(st.sampled_from(["sdpa", "matmul"])),
                "scale_q": draw(st.booleans()), "merge": draw(st.sampled_from(["reshape", "flatten"])),
                "batch_first": draw(st.booleans()), "dropout": draw(st.booleans())}
        blocks.append((heads, form, draw(st.sampled_from([0, 8]))))
    return draw(st.integers(2, 5)), d, blocks


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=not os.environ.get("LUMOS_RANDOM"))
@given(models(), st.sampled_from(GATE_SETTINGS), st.integers(0, 10_000))
def test_generated_attention_prunes_to_the_same_function(spec, setting, seed):
    n_in, d, blocks = spec
    torch.manual_seed(seed)
    model = Model(n_in, d, blocks).eval()
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 5, n_in),))
    names = lumos_fx.gates(wrapped)
    assert any("dims" in n for n in names), names  # every form here has cuttable head dims
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    # A constant that summary() reports as taken at the example's size (softmax of equal
    # scores is 1/N) holds at the example's length only.
    x = torch.randn(3, 5 if lumos_fx.summary(pruned).fixed_size else 7, n_in)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-4
