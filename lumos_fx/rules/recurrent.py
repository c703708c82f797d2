r"""Recurrent layers: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their cells.

Every gate of a recurrent layer reads the input step :math:`x_t` through the input weights
only, e.g. for the LSTM

.. math::
    \begin{pmatrix} i_t \\ f_t \\ g_t \\ o_t \end{pmatrix}
    = \begin{pmatrix} \sigma \\ \sigma \\ \tanh \\ \sigma \end{pmatrix}
      \left(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}\right),

so a gate :math:`z` on the input features folds exactly into the columns of the first
layer's :math:`W_{ih}` (of every direction): :math:`W_{ih} (z \odot x_t) = (W_{ih}
\operatorname{diag} z)\, x_t`. A closed feature's columns go and ``input_size`` shrinks:
feature selection on sequence models. The hidden units stay whole: the output sequence and
the returned states carry them, and a closed unit would have to leave the recurrence too
(:math:`W_{hh}`'s columns), which lumos_fx does not cut yet; summary() says so.
"""

from __future__ import annotations

import operator

from torch import fx, nn

from .api import Connecting, ModuleRule, Outcome, Pruning, set_arg, shape_of
from .linear import consume_last_dim
from .registry import REGISTRY

_KEPT = "hidden units of {}: lumos_fx cuts a recurrent layer's input features, not yet its hidden units"


def _input_weights(module: nn.Module) -> list:
    if isinstance(module, nn.RNNCellBase):
        return [module.weight_ih]
    return [getattr(module, f"weight_ih_l0{suffix}") for suffix in ("", "_reverse")[:1 + module.bidirectional]]


def _reads(node: fx.Node) -> list[fx.Node]:
    """The ``[i]`` reads of `node`'s output tuple, through nested tuples (an LSTM's (h, c))."""
    found, todo = [], [node]
    while todo:
        for user in todo.pop().users:
            if user.op == "call_function" and user.target is operator.getitem:
                found.append(user)
                if shape_of(user) is None:
                    todo.append(user)
    return found


class RecurrentRule(ModuleRule):
    channels_at = -1

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module, x = an.module(node), node.args[0]
        what = type(module).__name__
        for state in node.all_input_nodes[1:]:  # an initial state holds the hidden units
            space = an.space(state)
            if space is not None:
                an.block(space, _KEPT.format(what))
        reads = _reads(node) if shape_of(node) is None else []
        for out in [node] if shape_of(node) is not None else [n for n in reads if shape_of(n) is not None]:
            an.block(an.new_space(out, -1, producer=True), _KEPT.format(f"{what} '{node.target}'"))
        for read in reads:
            an.claim(read)
        consume_last_dim(node, x, [an.param_space(w, 1) for w in _input_weights(module)], an)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if pc.is_empty(x):  # every feature closed: the layer runs on a zero-width input
            dims = list(range(len(shape_of(x)) - 1))
            ref = pc.reference(x, dims, node)
            sizes = tuple(pc.insert(node, "call_method", "size", (ref, d)) for d in dims)
            set_arg(node, 0, "input", pc.insert(node, "call_method", "new_zeros", (ref, (*sizes, 0))))
        return pc.materialize_dead_inputs(node)

    def resize(self, module: nn.Module) -> None:
        module.input_size = _input_weights(module)[0].shape[1]
        if not isinstance(module, nn.RNNCellBase):
            module._init_flat_weights()  # forward reads the weights through this list


REGISTRY.register(RecurrentRule(), nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)
