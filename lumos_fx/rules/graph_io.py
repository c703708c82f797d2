"""Rules for the graph's own ops: model inputs, attributes, the model output."""

from __future__ import annotations

import operator
from collections import deque

import torch
from torch import fx

from .api import LIVE, Connecting, Outcome, Pruning, Rule, normalize_dim, parameter_readers, shape_of, tensor_meta
from .registry import REGISTRY


class Placeholder(Rule):
    """A floating-point model input opens a space: its channels are the features.

    Features are the columns of a (batch, features) input and the channels of an image or
    volume (batch, C, H, W[, D]): spectral bands, fields, redshift slices. For inputs of 3
    or more dims, the first layer that reads the input says which dim holds its channels
    (a conv reads dim 1, a Linear the last), also through an index that keeps the last dim
    (a recurrent cell reading step ``x[:, t]`` reads the last); without one, they are
    channels-first (dim 1), as torch's layers take them. Integer and boolean inputs (indices,
    masks) are not features.
    """

    def connect(self, node: fx.Node, an: Connecting) -> None:
        meta = tensor_meta(node)
        if meta is None or len(meta.shape) == 0:
            return
        space = an.new_space(node, self.channel_dim(node, an), producer=True)
        if not meta.dtype.is_floating_point:
            an.block(space, f"input of dtype {meta.dtype} holds no features")

    def channel_dim(self, node: fx.Node, an: Connecting) -> int:
        ndim = len(shape_of(node))
        if ndim <= 2:
            return ndim - 1
        shape, seen = shape_of(node), {node}
        queue = deque((user, False) for user in node.users)  # (reader, reached through an index)
        while queue:
            user, indexed = queue.popleft()
            if user in seen:
                continue
            seen.add(user)
            hint = getattr(an.rule_of(user), "channels_at", None)
            if hint is not None and (hint < 0 or not indexed):  # an index keeps the dims counted from the end
                return normalize_dim(hint, ndim)
            out = shape_of(user)
            if out == shape:  # element-wise on the way to the first layer
                queue.extend((u, indexed) for u in user.users)
            elif user.target is operator.getitem and out and out[-1] == shape[-1] and len(out) < len(shape):
                queue.extend((u, True) for u in user.users)
        return 1

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        return LIVE


class GetAttr(Rule):
    """A parameter or buffer read directly in forward (``x + self.bias``).

    Its channel dim is its last dim of size > 1 (``(C,)``, ``(C, 1, 1)`` and ``(1, C, 1, 1)``
    biases all have their channels there); it is sliced with its group. Its other dims are
    read whole by the ops that use it, so they keep every channel. A one-element attribute
    (GIN's eps) is a scalar, like a 0-dim one: no channels. A weight whose readers all tie
    its dims themselves (``F.linear(x, self.weight)``: :meth:`Rule.ties_parameter`) is theirs.
    """

    def connect(self, node: fx.Node, an: Connecting) -> None:
        value = an.attribute(node)
        shape = shape_of(node)
        if not isinstance(value, torch.Tensor) or not shape or value.numel() == 1:
            return
        readers = list(parameter_readers(node))
        if readers and all((rule := an.rule_of(user)) is not None and rule.ties_parameter(user, read)
                           for user, read in readers):
            an.claim(node)  # its readers describe it
            return
        dim = max((d for d, s in enumerate(shape) if s > 1), default=len(shape) - 1)
        space = an.new_space(node, dim, producer=True)
        for dim in range(value.dim()):
            param = an.param_space(value, dim)
            if dim == space.dim:
                an.tie(space, param)
            else:
                an.block(param, f"read whole by '{node.target}' in forward")

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        return LIVE


@fx.node.has_side_effect
def train_output(value):
    """Marks the train-mode output of a graph that joins a model's train- and eval-mode
    traces (:mod:`lumos_fx.modes`); the graph's output is the eval-mode one."""
    return value


class Output(Rule):
    """Channels that reach a model output are the model's answer: never pruned."""

    def __init__(self, what: str = "the model output") -> None:
        self.what = what

    def connect(self, node: fx.Node, an: Connecting) -> None:
        for arg in node.all_input_nodes:
            space = an.space(arg)
            if space is not None:
                an.block(space, f"reaches {self.what}")

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        return pc.materialize_dead_inputs(node)


REGISTRY.register_op("placeholder", Placeholder())
REGISTRY.register_op("get_attr", GetAttr())
REGISTRY.register_op("output", Output())
REGISTRY.register(Output("the model's train-mode output"), train_output)
