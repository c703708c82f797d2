"""Attention written by hand with separate Q/K/V projections or a fused qkv: whole heads are
cut from Q, K, V and the output projection, and dims inside every head (q and k together, v
with the output projection); LayerNorm keeps the residual stream, and says so."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates


class Block(nn.Module):
    """A pre-norm ViT block, attention by hand (`q @ k^T`, softmax, `@ v`) or by SDPA."""

    def __init__(self, d=16, heads=4, sdpa=False, kv_heads=None, fused=None):
        super().__init__()
        self.h, self.dh, self.sdpa, self.fused = heads, d // heads, sdpa, fused
        self.kv = kv_heads or heads
        self.scale = self.dh ** -0.5
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k, self.v = nn.Linear(d, self.kv * self.dh), nn.Linear(d, self.kv * self.dh)
        self.qkv = nn.Linear(d, 3 * d) if fused else None  # timm's layout: (3, heads, head_dim)
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, N, C = x.shape
        h = self.norm1(x)
        if self.fused:
            qkv = self.qkv(h).reshape(B, N, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0) if self.fused == "unbind" else (qkv[0], qkv[1], qkv[2])
        else:
            q = self.q(h).view(B, N, self.h, self.dh).transpose(1, 2)
            k = self.k(h).view(B, N, self.kv, self.dh).transpose(1, 2)
            v = self.v(h).view(B, N, self.kv, self.dh).transpose(1, 2)
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.kv != self.h)
        else:
            a = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, C))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def check(wrapped, pruned, n=7):
    x = torch.randn(3, n, 16)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-4


@pytest.mark.parametrize("sdpa", [False, True])
@pytest.mark.parametrize("fused", [None, "unbind", "getitem"])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
@pytest.mark.parametrize("seed", range(2))
def test_attention_heads_and_head_dims_are_cut(sdpa, fused, setting, seed):
    torch.manual_seed(seed)
    wrapped = lumos_fx.instrument(Block(sdpa=sdpa, fused=fused), (torch.randn(2, 5, 16),))
    heads = "qkv" if fused else "q"
    dims = {"qkv head dims": 4} if fused else {"q+k q·k dims": 4, "v v dims": 4}
    assert {name: g.n for name, g in lumos_fx.gates(wrapped).items()} == {heads: 4, "fc1": 64} | dims
    set_gates(wrapped, setting, seed)
    check(wrapped, lumos_fx.prune(wrapped))  # also at another sequence length


def test_a_closed_head_leaves_q_k_v_and_the_output_projection():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Block(), (torch.randn(2, 5, 16),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["q"].log_alpha[[1, 3]] = -5.0
    pruned = lumos_fx.prune(wrapped)
    for name in ("q", "k", "v"):
        layer = getattr(pruned, name)
        assert layer.out_features == 8
        keep = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])  # heads 0 and 2, 4 dims each
        torch.testing.assert_close(layer.bias, getattr(wrapped, name).bias[keep])
    assert pruned.proj.in_features == 8
    code = pruned.code
    assert code.count(", 2, 4)") == 3  # view(B, N, heads, head_dim) with the kept head count
    assert "reshape(getitem, getitem_1, -1)" in code  # C read off the input becomes -1
    assert "matmul * 0.5" in code  # the original 1/sqrt(head dim 4), kept as the model wrote it
    removed = 3 * (8 * 16 + 8) + 16 * 8  # 8 rows of q, k, v and their biases; 8 columns of proj
    assert count_params(pruned) == lumos_fx.summary(pruned).params_before - removed
    check(wrapped, pruned)


@pytest.mark.parametrize("fused", ["unbind", "getitem"])
def test_a_closed_head_leaves_a_fused_qkv_projection(fused):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Block(fused=fused), (torch.randn(2, 5, 16),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["qkv"].log_alpha[[0, 3]] = -5.0
    pruned = lumos_fx.prune(wrapped)
    keep = torch.tensor([p * 16 + h * 4 + d for p in range(3) for h in (1, 2) for d in range(4)])
    torch.testing.assert_close(pruned.qkv.weight, wrapped.qkv.weight[keep])
    assert pruned.proj.in_features == 8
    assert "reshape(getitem, getitem_1, 3, 2, 4)" in pruned.code
    check(wrapped, pruned)


@pytest.mark.parametrize("sdpa", [False, True])
def test_closed_head_dims_leave_every_head(sdpa):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Block(sdpa=sdpa), (torch.randn(2, 5, 16),))
    gates = lumos_fx.gates(wrapped)
    with torch.no_grad():
        gates["q+k q·k dims"].log_alpha[[1, 3]] = -5.0
        gates["v v dims"].log_alpha[0] = -5.0
    pruned = lumos_fx.prune(wrapped)
    qk_rows = torch.tensor([h * 4 + d for h in range(4) for d in (0, 2)])
    z = gates["q+k q·k dims"].eval_value().detach()[[0, 2]].repeat(4)
    torch.testing.assert_close(pruned.q.weight, wrapped.q.weight[qk_rows] * z[:, None])  # the gate folds into q
    torch.testing.assert_close(pruned.k.weight, wrapped.k.weight[qk_rows])
    v_rows = torch.tensor([h * 4 + d for h in range(4) for d in (1, 2, 3)])
    torch.testing.assert_close(pruned.v.bias, wrapped.v.bias[v_rows])
    assert pruned.proj.in_features == 12
    code = pruned.code
    assert code.count(", 4, 2)") == 2 and code.count(", 4, 3)") == 1  # view(B, N, heads, head dims)
    # The scale stays 1/sqrt(4), the unpruned head dim, not 1/sqrt(2).
    assert ("scale = 0.5" in code) if sdpa else ("matmul * 0.5" in code)
    removed = 2 * 8 * (16 + 1) + 4 * (16 + 1) + 16 * 4  # q, k: 8 rows; v: 4 rows; proj: 4 columns
    assert count_params(pruned) == lumos_fx.summary(pruned).params_before - removed
    check(wrapped, pruned)


def test_a_fused_qkv_cuts_one_set_of_head_dims_from_q_k_and_v():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Block(fused="unbind", sdpa=True), (torch.randn(2, 5, 16),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["qkv head dims"].log_alpha[[0, 1]] = -5.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.qkv.out_features == 3 * 4 * 2 and pruned.proj.in_features == 8
    assert "reshape(getitem, getitem_1, 3, 4, 2)" in pruned.code
    check(wrapped, pruned)


def test_all_closed_head_dims_keep_one_zero_dim():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Block(sdpa=True), (torch.randn(2, 5, 16),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["q+k q·k dims"].log_alpha.fill_(-5.0)
    pruned = lumos_fx.prune(wrapped)
    assert pruned.q.out_features == 4 and pruned.q.weight.abs().max() == 0  # uniform attention
    check(wrapped, pruned)


def test_expected_alive_counts_a_head_dim_row_alive_when_head_and_dim_are():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Block(sdpa=True), (torch.randn(2, 5, 16),))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            open_ = torch.rand(gate.n, generator=gen) < 0.6
            open_[0] = True  # no group closes whole: no layer turns into a constant
            gate.log_alpha.copy_(torch.where(open_, 15.0, -15.0))
    expected, total = lumos_fx.expected_alive(wrapped)
    pruned = lumos_fx.prune(wrapped)
    removed = lumos_fx.summary(pruned).params_before - count_params(pruned)
    assert expected.item() == pytest.approx(total - removed, abs=1e-2)


def test_head_dims_stay_when_the_scale_reads_them():
    class ScaleFromShape(Block):
        def forward(self, x):
            B, N, C = x.shape
            q = self.q(x).view(B, N, self.h, self.dh).transpose(1, 2)
            k = self.k(x).view(B, N, self.h, self.dh).transpose(1, 2)
            v = self.v(x).view(B, N, self.h, self.dh).transpose(1, 2)
            a = ((q @ k.transpose(-2, -1)) / q.size(-1) ** 0.5).softmax(dim=-1) @ v
            return self.proj(a.transpose(1, 2).reshape(B, N, C))

    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(ScaleFromShape(), (torch.randn(2, 5, 16),))
    assert "v v dims" in lumos_fx.gates(wrapped) and "q+k q·k dims" not in lumos_fx.gates(wrapped)
    reasons = lumos_fx.summary(wrapped).kept_whole
    assert any("q·k dims" in name and "q.size(-1)" in why for name, why in reasons.items())
    set_gates(wrapped, "half", 0)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["q"].log_alpha[0] = 6.0  # a head stays: the attention is not a constant
    check(wrapped, lumos_fx.prune(wrapped))


def test_layernorm_keeps_the_residual_stream_and_says_why():
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Linear(16, 2))
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 5, 6),))
    assert "0" not in lumos_fx.gates(wrapped)
    assert "LayerNorm" in lumos_fx.summary(wrapped).kept_whole["0"]


def test_grouped_query_attention_keeps_its_heads():
    torch.manual_seed(1)
    wrapped = lumos_fx.instrument(Block(sdpa=True, kv_heads=2), (torch.randn(2, 5, 16),))
    assert "q" not in lumos_fx.gates(wrapped)
    set_gates(wrapped, "half", 1)
    assert any("grouped-query" in reason for reason in lumos_fx.summary(wrapped).kept_whole.values())
    check(wrapped, lumos_fx.prune(wrapped))


@pytest.mark.parametrize("sdpa", [False, True])
def test_attention_over_closed_inputs_is_a_constant(sdpa):
    torch.manual_seed(0)
    block = Block(sdpa=sdpa)
    block.norm1 = block.norm2 = nn.Identity()  # so that q, k and v become constants too
    wrapped = lumos_fx.instrument(nn.Sequential(nn.Linear(3, 16), block), (torch.randn(2, 5, 3),))
    set_gates(wrapped, "open", 0)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["input"].log_alpha.fill_(-6.0)
    pruned = lumos_fx.prune(wrapped)
    fixed = lumos_fx.summary(pruned).fixed_size
    # by hand, softmax of equal scores is 1/N: constants of the example's length, which summary lists
    assert (fixed == []) == sdpa, fixed
    x = torch.randn(3, 7 if sdpa else 5, 3)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-5


def repeat_kv(hidden, n_rep):
    """transformers' repeat_kv: (B, kv_heads, N, D) -> (B, kv_heads * n_rep, N, D)."""
    batch, kv_heads, length, head_dim = hidden.shape
    hidden = hidden[:, :, None, :, :].expand(batch, kv_heads, n_rep, length, head_dim)
    return hidden.reshape(batch, kv_heads * n_rep, length, head_dim)


class RepeatedKV(Block):
    """Grouped-query attention as Llama writes it: key and value heads repeated to the
    query heads before attention."""

    def forward(self, x):
        B, N, C = x.shape
        h = self.norm1(x)
        q = self.q(h).view(B, N, -1, self.dh).transpose(1, 2)
        k = repeat_kv(self.k(h).view(B, N, -1, self.dh).transpose(1, 2), self.h // self.kv)
        v = repeat_kv(self.v(h).view(B, N, -1, self.dh).transpose(1, 2), self.h // self.kv)
        a = F.scaled_dot_product_attention(q, k, v) if self.sdpa else (q @ k.transpose(-2, -1) * self.scale).softmax(-1) @ v
        return x + self.proj(a.transpose(1, 2).reshape(B, N, -1))


@pytest.mark.parametrize("sdpa", [False, True])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_repeated_key_value_heads_are_cut_with_their_query_heads(sdpa, setting):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(RepeatedKV(heads=4, kv_heads=2, sdpa=sdpa), (torch.randn(2, 5, 16),))
    assert lumos_fx.gates(wrapped)["q"].n == 2  # a unit: one key/value head and the two query heads it serves
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    for n in (5, 9):
        check(wrapped, pruned, n)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["q"].log_alpha.copy_(torch.tensor([6.0, -6.0]))
    pruned = lumos_fx.prune(wrapped)
    assert pruned.k.out_features == pruned.v.out_features == 4 and pruned.q.out_features == 8
    check(wrapped, pruned, 9)


class TransformersStyle(Block):
    """The attention as transformers writes it: sizes read off q and v, the output reshaped
    to its own shape with ``value.shape[-1]``, ``.contiguous()`` after the head merge."""

    def forward(self, x):
        hidden_shape = (*x.shape[:-1], -1, self.dh)
        h = self.norm1(x)
        q, k, v = (p(h).view(hidden_shape).transpose(1, 2) for p in (self.q, self.k, self.v))
        q_length = q.shape[2]
        a = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        a = a.reshape(a.shape[0], -1, q_length, v.shape[-1]).transpose(1, 2).contiguous()
        a = a.reshape(*x.shape[:-1], -1).contiguous()
        return x + self.proj(a)


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_head_dims_are_cut_through_transformers_size_reads(setting):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(TransformersStyle(), (torch.randn(2, 5, 16),))
    assert {"q", "q+k q·k dims", "v v dims"} <= set(lumos_fx.gates(wrapped))
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    for n in (5, 9):
        check(wrapped, pruned, n)


class Conv1D(nn.Module):
    """transformers' ``Conv1D``: ``x W + b`` with ``W`` of shape (in, out), by ``torch.addmm``."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight, self.bias = nn.Parameter(torch.randn(nx, nf) * 0.2), nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class GPT2Style(nn.Module):
    """GPT-2's attention: one ``Conv1D`` for q, k and v split along the channels, causal SDPA,
    the heads merged and ``.contiguous()`` before the output ``Conv1D``."""

    def __init__(self, d=16, heads=4):
        super().__init__()
        self.dh, self.split_size = d // heads, d
        self.c_attn, self.c_proj = Conv1D(3 * d, d), Conv1D(d, d)

    def forward(self, x):
        q, k, v = self.c_attn(x).split(self.split_size, dim=2)
        shape = (*q.shape[:-1], -1, self.dh)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.dh ** -0.5)
        a = a.transpose(1, 2)
        return x + self.c_proj(a.reshape(*a.shape[:-2], -1).contiguous())


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_head_dims_are_cut_through_a_fused_conv1d_split_into_q_k_v(setting, tmp_path):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(GPT2Style(), (torch.randn(2, 5, 16),))
    gates = {name: g.n for name, g in lumos_fx.gates(wrapped).items()}
    heads, qk, v = (next(name for name in gates if name.endswith(suffix)) for suffix in ("", " q·k dims", " v dims"))
    assert gates[heads] == 4 and gates[qk] == 4 and gates[v] == 4, gates
    set_gates(wrapped, setting, 0)
    if setting == "random":
        with torch.no_grad():  # some dims closed, every head open
            lumos_fx.gates(wrapped)[heads].log_alpha.fill_(6.0)
            lumos_fx.gates(wrapped)[qk].log_alpha[:2] = -6.0
            lumos_fx.gates(wrapped)[v].log_alpha[1] = -6.0
    pruned = lumos_fx.prune(wrapped)
    for n in (5, 9):
        check(wrapped, pruned, n)
    if setting == "random":
        # q and k lose 2 dims of every head, v one: 4 * (2 + 2 + 3) rows of c_attn are left.
        assert pruned.get_parameter("c_attn.weight").shape == (16, 28)
        assert pruned.get_parameter("c_proj.weight").shape == (12, 16)
    lumos_fx.export(pruned, tmp_path / "m")
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        assert max_rel_error(lumos_fx.load(tmp_path / "m")(x), pruned(x)) < 1e-6
