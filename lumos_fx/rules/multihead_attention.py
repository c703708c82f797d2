"""``nn.MultiheadAttention``, written out so that its heads and widths can be cut.

fx calls ``nn.MultiheadAttention`` as one opaque op, so its heads would be kept whole. After
tracing, each call becomes (:meth:`~lumos_fx.rules.api.ModuleRule.write_out`), on the traced copy of the model,

.. math::
    Q = x_q W_Q^T + b_Q,\\; K = x_k W_K^T + b_K,\\; V = x_v W_V^T + b_V \\quad (\\text{split into } H \\text{ heads}),
    \\qquad O = \\operatorname{softmax}\\!\\Big(\\frac{Q K^T}{\\sqrt{D}} + M\\Big) V,\\qquad y = O W_O^T + b_O,

with ``nn.Linear`` modules ``q_proj, k_proj, v_proj, out_proj`` holding the module's weights
and ``F.scaled_dot_product_attention`` for the middle, which is what the rules cut heads
from. ``M`` merges ``attn_mask`` and ``key_padding_mask`` (boolean masks mean "do not
attend" in ``nn.MultiheadAttention`` and become ``-inf``). With dropout on the attention
weights, the middle is written as ``softmax(Q K^T / sqrt(D) + M)``, an ``nn.Dropout`` (which
follows train/eval) and ``@ V``. Calls that read the attention weights, ``add_bias_kv``,
``add_zero_attn`` or ``is_causal`` stay opaque.

"""

from __future__ import annotations

import inspect
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .api import Connecting, ModuleRule, Unsupported, shape_of
from .registry import REGISTRY


class MultiheadAttentionRule(ModuleRule):
    """A supported call is written out into projections and attention, which other rules cut;
    any other call stays one op and keeps its channels, with the reason."""

    def write_out(self, node: fx.Node, gm: fx.GraphModule) -> bool:
        module = gm.get_submodule(node.target)
        call = _bound_call(node)
        if call is None or _opaque(node, module, call) is not None:
            return False
        _write_out(gm, node, module, call)
        return True

    def connect(self, node: fx.Node, an: Connecting) -> None:
        call = _bound_call(node)
        raise Unsupported(_opaque(node, an.module(node), call) if call is not None
                          else "called with arguments lumos_fx does not bind")


def _bound_call(node: fx.Node) -> dict | None:
    try:
        return inspect.signature(nn.MultiheadAttention.forward).bind(None, *node.args, **node.kwargs).arguments
    except TypeError:
        return None


def _opaque(node: fx.Node, module: nn.MultiheadAttention, call: dict) -> str | None:
    """Why the call must stay one op, or None."""
    if module.bias_k is not None or module.add_zero_attn:
        return "add_bias_kv / add_zero_attn attention is kept whole"
    if call.get("is_causal", False):
        return "is_causal attention is kept whole"
    for user in node.users:
        if not (user.op == "call_function" and user.target is operator.getitem and user.args[1] in (0, 1)):
            return "its output is read other than as (output, weights)"
        if user.args[1] == 1 and user.users:
            return "its attention weights are read"
    return None


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                      dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _projections(module: nn.MultiheadAttention) -> nn.Module:
    e = module.embed_dim
    if module._qkv_same_embed_dim:
        weights = module.in_proj_weight.detach().split(e)
    else:
        weights = (module.q_proj_weight.detach(), module.k_proj_weight.detach(), module.v_proj_weight.detach())
    biases = module.in_proj_bias.detach().split(e) if module.in_proj_bias is not None else (None,) * 3
    out = nn.Module()
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
        out.add_module(name, _linear(w, b))
    out.add_module("out_proj", _linear(module.out_proj.weight.detach(),
                                       None if module.out_proj.bias is None else module.out_proj.bias.detach()))
    if module.dropout:
        out.add_module("attn_drop", nn.Dropout(module.dropout))
    return out


def _write_out(gm: fx.GraphModule, node: fx.Node, module: nn.MultiheadAttention, call: dict) -> None:
    gm.delete_submodule(node.target)
    gm.add_submodule(node.target, _projections(module))
    g, t = gm.graph, node.target
    heads, head_dim, embed = module.num_heads, module.head_dim, module.embed_dim
    dtype = module.out_proj.weight.dtype
    before = set(g.nodes)
    with g.inserting_before(node):
        def batch_first(x):
            return x if module.batch_first else g.call_method("transpose", (x, 0, 1))

        q_in, k_in, v_in = (batch_first(call[name]) for name in ("query", "key", "value"))
        b, length = g.call_method("size", (q_in, 0)), g.call_method("size", (q_in, 1))
        source = g.call_method("size", (k_in, 1))

        def heads_of(x, proj, n):
            h = g.call_module(f"{t}.{proj}", (x,))
            return g.call_method("transpose", (g.call_method("view", (h, b, n, heads, head_dim)), 1, 2))

        q, k, v = heads_of(q_in, "q_proj", length), heads_of(k_in, "k_proj", source), heads_of(v_in, "v_proj", source)
        mask = _mask(g, call, b, heads, length, source, dtype)
        if module.dropout:
            scores = g.call_function(operator.mul, (g.call_function(operator.matmul, (
                q, g.call_method("transpose", (k, -2, -1)))), head_dim ** -0.5))
            scores = scores if mask is None else g.call_function(operator.add, (scores, mask))
            weights = g.call_module(f"{t}.attn_drop", (g.call_method("softmax", (scores, -1)),))
            o = g.call_function(operator.matmul, (weights, v))
        else:
            o = g.call_function(F.scaled_dot_product_attention, (q, k, v),
                                {"attn_mask": mask} if mask is not None else {})
        o = g.call_method("reshape", (g.call_method("transpose", (o, 1, 2)), b, length, embed))
        out = g.call_module(f"{t}.out_proj", (o,))
        out = out if module.batch_first else g.call_method("transpose", (out, 0, 1))
    for new in g.nodes:
        if new not in before:
            new.stack_trace = node.stack_trace  # errors name the user's line that called the module
    for user in list(node.users):
        if user.args[1] == 0:
            user.replace_all_uses_with(out)
        g.erase_node(user)
    g.erase_node(node)


def _additive(g: fx.Graph, mask: fx.Node, dtype: torch.dtype) -> fx.Node:
    """A float mask to add to the scores: boolean True ("do not attend") becomes -inf."""
    if shape_of(mask) is not None and mask.meta["tensor_meta"].dtype == torch.bool:
        zeros = g.call_function(torch.zeros_like, (mask,), {"dtype": dtype})
        return g.call_method("masked_fill", (zeros, mask, float("-inf")))
    return mask


def _mask(g: fx.Graph, call: dict, b, heads: int, length, source, dtype: torch.dtype) -> fx.Node | None:
    """``attn_mask`` (L, S) or (B*H, L, S) and ``key_padding_mask`` (B, S), as one additive
    mask broadcastable to (B, H, L, S)."""
    parts = []
    attn = call.get("attn_mask")
    if isinstance(attn, fx.Node):
        m = _additive(g, attn, dtype)
        if len(shape_of(attn)) == 3:
            m = g.call_method("view", (m, b, heads, length, source))
        parts.append(m)
    padding = call.get("key_padding_mask")
    if isinstance(padding, fx.Node):
        parts.append(g.call_method("view", (_additive(g, padding, dtype), b, 1, 1, source)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else g.call_function(operator.add, tuple(parts))


REGISTRY.register(MultiheadAttentionRule(), nn.MultiheadAttention)
