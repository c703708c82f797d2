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

A gate may also scale the rows of a producer upstream, where prune() folds it
(:attr:`lumos_fx.channels.Consumer.folds_at`): a gate on a query's head dims scales the
query projection's rows and bias, :math:`(W x + b) \odot z = (\operatorname{diag} z\, W) x
+ z \odot b`, instead of every query of every head and token.
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


def folds_at_producer(gm: fx.GraphModule, producer: fx.Node, params: list[str]) -> bool:
    """Whether a gate whose prune-time fold scales `params` (dims of the producer's weight and
    bias, see :attr:`lumos_fx.channels.Consumer.folds_at`) can scale them in training too:
    the producer is a module call on one input with a functional form, not folded already."""
    if producer.op != "call_module" or len(producer.args) != 1 or producer.kwargs:
        return False
    module = gm.get_submodule(producer.target)
    rule = REGISTRY.module_rule(module)
    return (rule is not None and rule.folded(module) is not None
            and all(p in (f"{producer.target}.weight", f"{producer.target}.bias") for p in params))


def fold(gm: fx.GraphModule, node: fx.Node, scales: dict[str, tuple[int, fx.Node]]) -> list[fx.Node]:
    """Turn ``module(x)`` into ``functional(x, module.weight * s_w, module.bias * s_b, ...)``,
    with ``scales = {"weight": (dim, s_w), "bias": (0, s_b)}`` (a vector along that dim of
    the tensor; a missing entry leaves it as it is); returns the nodes it added."""
    module = gm.get_submodule(node.target)
    function, rest = REGISTRY.module_rule(module).folded(module)
    graph = gm.graph
    added = []
    operands = {}
    with graph.inserting_before(node):
        for name in ("weight", "bias"):
            tensor = getattr(module, name, None)
            if tensor is None:
                operands[name] = None
                continue
            operands[name] = graph.get_attr(f"{node.target}.{name}")
            added.append(operands[name])
            if name in scales:
                dim, s = scales[name]
                if dim != tensor.dim() - 1:
                    s = graph.call_method("view", (s, -1, *[1] * (tensor.dim() - 1 - dim)))
                    added.append(s)
                operands[name] = graph.call_function(operator.mul, (operands[name], s))
                added.append(operands[name])
    annotate(node, folded=node.target)
    node.op, node.target = "call_function", function
    node.args = (node.args[0], operands["weight"], operands["bias"], *rest)
    return added


def unfold(node: fx.Node) -> None:
    """Undo :func:`fold` on `node` (the nodes it added lose their last user)."""
    node.op, node.target = "call_module", info(node).folded
    node.args = (node.args[0],)
    annotate(node, folded=None)
