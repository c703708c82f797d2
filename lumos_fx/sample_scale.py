"""Drop path and stochastic depth: a call lumos_fx keeps as one op (an automatic leaf, a
library function) whose traced code, in each mode, multiplies or divides its input by
factors with one value per sample,

.. math::
    y = x \\cdot s, \\qquad s \\in \\mathbb{R}^{B \\times 1 \\times \\dots \\times 1},

(timm's ``DropPath`` and torchvision's ``stochastic_depth`` in train mode; the identity in
eval mode). Such a call passes every channel through: its output channel ``c`` is its input
channel ``c`` scaled, so it blocks nothing, and it runs as it is on fewer channels, since
its factors read nothing of the input but its batch size, rank, dtype and device.
"""

from __future__ import annotations

import operator

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from .fxutil import shape_of
from .leaf_code import FunctionCall, graph_values, is_flag, with_flag
from .trace import trace_modes

_SCALES = {operator.mul, operator.truediv, torch.mul, torch.div, "mul", "div", "mul_", "div_"}
_NUMERATOR_ONLY = {operator.truediv, torch.div, "div", "div_"}
# Reads of the input that give its batch size, rank, dtype or device, and nothing of its values.
_METADATA = {"ndim", "dtype", "device"}
_LIKE = {"new_empty", "new_zeros", "new_ones", "new_full", "dim"}


def _reads_batch_only(user: fx.Node, x: fx.Node) -> bool:
    if user.op == "call_function" and user.target is getattr and user.args[1] in _METADATA:
        return True
    if user.op == "call_function" and user.target is getattr and user.args[1] == "shape":
        return all(u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0 for u in user.users)
    if user.op == "call_method" and user.target == "size":
        return len(user.args) == 2 and user.args[1] == 0
    return user.op == "call_method" and user.target in _LIKE and user.args[0] is x


def scales_samples(gm: fx.GraphModule, example: tuple) -> bool:
    """Whether `gm` (one mode's trace) computes ``x * s`` of its first input ``x``: a chain
    of products and quotients with per-sample factors, or ``x`` itself."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if not placeholders or not isinstance(output.args[0], fx.Node):
        return False
    try:
        ShapeProp(gm).propagate(*example)
    except Exception:
        return False
    x, chain, value = placeholders[0], [], output.args[0]
    from_x = _depends_on(x) | {x}
    while value is not x:
        operands = [a for a in value.args if isinstance(a, fx.Node)] if value.target in _SCALES else []
        on_chain = [a for a in operands if a in from_x]
        if value.op not in ("call_function", "call_method") or len(on_chain) != 1 or value.kwargs:
            return False
        if value.target in _NUMERATOR_ONLY and value.args[0] is not on_chain[0]:
            return False
        for factor in (a for a in operands if a is not on_chain[0]):
            shape = shape_of(factor)
            if shape is None or any(s != 1 for s in shape[1:]):
                return False
        chain.append(value)
        value = on_chain[0]
    # The chain alone reads x's values; every other read of x is its batch size or metadata.
    readers = set(chain) if chain else {output}
    return all(u in readers or _reads_batch_only(u, x) for u in x.users) and \
        all(all(u in chain for u in n.users) for n in chain[1:])


def _depends_on(x: fx.Node) -> set[fx.Node]:
    """The nodes computed from `x`'s values (not from its metadata only)."""
    found, todo = set(), [u for u in x.users if not _reads_batch_only(u, x)]
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(node.users)
    return found


def passes_channels(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether the call `node` (a leaf module without parameters or buffers, or a function
    lumos_fx has no rule for) scales whole samples of its first argument in both modes."""
    if node.op == "call_function" and (getattr(node.target, "__module__", None) or "").split(".")[0] == "torch":
        return False  # torch's own ops have rules or are refused; a library's function may be a drop path
    inputs = [a for a in graph_values(node) if not is_flag(a)]
    if not inputs or inputs[0] is not node.args[0] or any(a.op == "get_attr" for a in inputs):
        return False
    example = []
    for a in inputs:
        meta = a.meta.get("tensor_meta")
        if meta is None or not getattr(meta, "dtype", torch.int64).is_floating_point:
            return False
        example.append(torch.randn(meta.shape, dtype=meta.dtype))
    example = tuple(example)
    try:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if any(True for _ in module.parameters()) or any(True for _ in module.buffers()) or node.kwargs:
                return False
            modes = trace_modes(module, example)
            graphs = [modes.train] + ([modes.eval] if modes.eval is not None else [])
        elif node.op == "call_function":
            graphs = []
            for training in (True, False):
                call = FunctionCall(node.target, *with_flag(node, training))
                graphs.append(trace_modes(call, example).train)
        else:
            return False
    except Exception:
        return False
    return all(scales_samples(g, tuple(e.clone() for e in example)) for g in graphs)

