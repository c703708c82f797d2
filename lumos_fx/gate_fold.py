r"""Gates folded into the weight of the layer that reads them.

A gate on the input channels of a linear layer or a convolution can scale the layer's
weight instead of its input:

.. math::
    W (x \odot z) = (W \operatorname{diag} z)\, x

The two compute the same, but the left side multiplies every activation by ``z`` (and its
backward two more times), the right side every weight entry: ``rows x in`` against
``out x in`` numbers for a linear layer, ``N x in x H x W`` against ``out x in x k x k`` for
a convolution. Training batches make the weight the smaller one (it also spares the first
layer the gradient of its input, which nothing needs).

:func:`fold` rewrites a ``call_module`` node in place into the functional call on the
scaled weight, keeping its name and meta (prune, the rules and the reports know layers by
node name); :func:`unfold` puts the module call back, for prune().
"""

from __future__ import annotations

import operator

from torch import fx

from .fxutil import normalize_dim, shape_of
from .node_info import annotate, info
from .rules import REGISTRY


def foldable(gm: fx.GraphModule, node: fx.Node, inp: fx.Node, dim: int) -> bool:
    """Whether the gate on channel dim `dim` of `inp` can fold into `node`'s weight: its rule
    gives a functional form (:meth:`~lumos_fx.rules.api.ModuleRule.folded`) and `dim` is the
    dim the layer reads as channels."""
    if node.op != "call_module" or node.args != (inp,) or node.kwargs:
        return False
    module = gm.get_submodule(node.target)
    rule = REGISTRY.module_rule(module)
    if rule is None or rule.channels_at is None or rule.folded(module) is None:
        return False
    return dim == normalize_dim(rule.channels_at, len(shape_of(inp)))


def fold(gm: fx.GraphModule, node: fx.Node, z: fx.Node) -> list[fx.Node]:
    """Turn ``module(x)`` into ``functional(x, module.weight * z, module.bias, ...)``, with
    `z` shaped to broadcast along the weight's input dim; returns the nodes it added."""
    module = gm.get_submodule(node.target)
    function, rest = REGISTRY.module_rule(module).folded(module)
    graph = gm.graph
    with graph.inserting_before(node):
        weight = graph.get_attr(f"{node.target}.weight")
        added = [weight]
        if module.weight.dim() > 2:
            z = graph.call_method("view", (z, -1, *([1] * (module.weight.dim() - 2))))
            added.append(z)
        scaled = graph.call_function(operator.mul, (weight, z))
        added.append(scaled)
        bias = graph.get_attr(f"{node.target}.bias") if module.bias is not None else None
        if bias is not None:
            added.append(bias)
    annotate(node, folded=node.target)
    node.op, node.target = "call_function", function
    node.args = (node.args[0], scaled, bias, *rest)
    return added


def unfold(node: fx.Node) -> None:
    """Undo :func:`fold` on `node` (the nodes it added lose their last user)."""
    node.op, node.target = "call_module", info(node).folded
    node.args = (node.args[0],)
    annotate(node, folded=None)
