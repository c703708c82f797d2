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
from collections.abc import Callable

import torch.nn.functional as F
from torch import fx, nn

from .fxutil import shape_of

FOLD = "lumos_fold"  # node.meta key: the module a folded node calls


def _linear(module: nn.Linear) -> tuple[Callable, tuple]:
    return F.linear, ()


def _conv(function: Callable) -> Callable[[nn.Module], tuple[Callable, tuple] | None]:
    def rule(module) -> tuple[Callable, tuple] | None:
        if module.groups != 1 or module.padding_mode != "zeros":
            return None  # a grouped weight's dim 1 is not the input's channels; padding modes pad first
        return function, (module.stride, module.padding, module.dilation, module.groups)
    return rule


# module type (exactly: a subclass may compute something else) -> its functional form and
# the arguments after (input, weight, bias), or None where it cannot be folded.
FOLDS: dict[type, Callable[[nn.Module], tuple[Callable, tuple] | None]] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv(F.conv1d),
    nn.Conv2d: _conv(F.conv2d),
    nn.Conv3d: _conv(F.conv3d),
}


def foldable(gm: fx.GraphModule, node: fx.Node, inp: fx.Node, dim: int) -> bool:
    """Whether the gate on channel dim `dim` of `inp` can fold into `node`'s weight."""
    if node.op != "call_module" or node.args != (inp,) or node.kwargs:
        return False
    module = gm.get_submodule(node.target)
    rule = FOLDS.get(type(module))
    channel = 1 if isinstance(module, nn.modules.conv._ConvNd) else len(shape_of(inp)) - 1
    return rule is not None and rule(module) is not None and dim == channel


def fold(gm: fx.GraphModule, node: fx.Node, z: fx.Node) -> list[fx.Node]:
    """Turn ``module(x)`` into ``functional(x, module.weight * z, module.bias, ...)``, with
    `z` shaped to broadcast along the weight's input dim; returns the nodes it added."""
    module = gm.get_submodule(node.target)
    function, rest = FOLDS[type(module)](module)
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
    node.meta[FOLD] = node.target
    node.op, node.target = "call_function", function
    node.args = (node.args[0], scaled, bias, *rest)
    return added


def unfold(node: fx.Node) -> None:
    """Undo :func:`fold` on `node` (the nodes it added lose their last user)."""
    node.op, node.target = "call_module", node.meta.pop(FOLD)
    node.args = (node.args[0],)
