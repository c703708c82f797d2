"""Rules for the graph's own ops: model inputs, attributes, the model output."""

from __future__ import annotations

import torch
from torch import fx

from ..fxutil import fetch_attr, shape_of, tensor_meta
from .registry import REGISTRY, Rule


class Placeholder(Rule):
    """A floating-point model input opens a space: its columns are the features.

    Features live on the last dim of a (batch, features) input. Integer and boolean inputs
    (indices, masks) are not features.
    """

    def connect(self, node: fx.Node, an) -> None:
        meta = tensor_meta(node)
        if meta is None or len(meta.shape) == 0:
            return
        space = an.new_space(node, -1, producer=True)
        if not meta.dtype.is_floating_point:
            an.block(space, f"input of dtype {meta.dtype} holds no features")

    def prune(self, node: fx.Node, pc) -> None:
        return None


class GetAttr(Rule):
    """A parameter or buffer read directly in forward (``x + self.bias``).

    Its channel dim is the last; it is sliced with its group. Its other dims are read whole
    by the ops that use it, so they keep every channel.
    """

    def connect(self, node: fx.Node, an) -> None:
        value = fetch_attr(an.gm, node.target)
        shape = shape_of(node)
        if not isinstance(value, torch.Tensor) or not shape:
            return
        space = an.new_space(node, -1, producer=True)
        for dim in range(value.dim()):
            param = an.param_space(value, dim)
            if dim == space.dim:
                an.tie(space, param)
            else:
                an.block(param, f"read whole by '{node.target}' in forward")

    def prune(self, node: fx.Node, pc) -> None:
        return None


class Output(Rule):
    """Channels that reach a model output are the model's answer: never pruned."""

    def connect(self, node: fx.Node, an) -> None:
        for arg in node.all_input_nodes:
            space = an.space(arg)
            if space is not None:
                an.block(space, "reaches the model output")

    def prune(self, node: fx.Node, pc) -> None:
        pc.materialize_dead_inputs(node)


REGISTRY.register_op("placeholder", Placeholder())
REGISTRY.register_op("get_attr", GetAttr())
REGISTRY.register_op("output", Output())
