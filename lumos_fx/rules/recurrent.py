r"""Recurrent layers: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their cells.

Every gate of a recurrent layer reads the input step :math:`x_t` and the previous hidden
state through its weights, e.g. for the LSTM

.. math::
    \begin{pmatrix} i_t \\ f_t \\ g_t \\ o_t \end{pmatrix}
    = \begin{pmatrix} \sigma \\ \sigma \\ \tanh \\ \sigma \end{pmatrix}
      \left(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}\right),
    \qquad c_t = f_t \odot c_{t-1} + i_t \odot g_t, \quad h_t = o_t \odot \tanh c_t

(GRU: three blocks :math:`r, z, n`; RNN: one). Unit :math:`j` owns row :math:`j` of each
block and is read by everything else only through column :math:`j` of :math:`W_{hh}`, of
the next layer's :math:`W_{ih}` (once per direction) and of the layers reading the output.
So a gate :math:`z_j` on the hidden units scales those columns (the recurrence sees
:math:`z \odot h_{t-1}`, exactly as the layers after it do), and a closed unit leaves with
its rows and columns. nn.LSTM has one ``hidden_size``: unit :math:`j` is one unit of every
layer and direction. A gate on the input features folds into the columns of the first
layer's :math:`W_{ih}` (every direction): feature selection on sequence models.

To put the gates inside the recurrence, a call of the whole layer is written out after
tracing (:meth:`RecurrentRule.write_out`) as :func:`run_recurrent` on its weights read in the
graph; the cut puts the module call back, resized. A layer with ``proj_size``, a
``PackedSequence``, an unbatched input or a read of the output other than its pieces stays
one op: its input features are still cut, its hidden units kept with the reason.

A cell (``LSTMCell``, ``GRUCell``, ``RNNCell``) called in the model's own loop over time is
one op per step (:class:`CellRule`): every call's output units are one group through the
cell's weights, the state a call reads is gated in front of it (the gate folds into the
columns of :math:`W_{hh}`) and an LSTM's :math:`c_{t-1}` carries the units of :math:`c_t`. A
zero initial state (``torch.zeros``, ``x.new_zeros``, or none) becomes no state in the cut
model: the cell's own zeros of its new size. Another initial state keeps the units, with
the reason.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx, nn
from torch.utils import _pytree as pytree
from torch.utils import flop_counter

from .api import EMPTY, Connecting, ModuleRule, Outcome, Pruning, Rule, set_arg, shape_of
from .linear import consume_channels
from .registry import REGISTRY

_KEPT = "hidden units of {}: {}"
_BLOCKS = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def run_recurrent(x, hx, *weights, layer: str, mode: str, num_layers: int, bias: bool, dropout: float,
                  training: bool, bidirectional: bool, batch_first: bool):
    """The forward of recurrent layer `layer` (nn.LSTM, nn.GRU, nn.RNN) on `weights` given in
    its ``_flat_weights`` order: the kernel its forward calls, and its output structure."""
    if hx is None:
        h = x.new_zeros(num_layers * (1 + bidirectional), x.shape[0 if batch_first else 1], weights[1].shape[1])
        hx = (h, h) if mode == "LSTM" else h
    if mode == "LSTM":
        out, h, c = torch._VF.lstm(x, hx, weights, bias, num_layers, dropout, training, bidirectional, batch_first)
        return out, (h, c)
    kernel = {"GRU": torch._VF.gru, "RNN_TANH": torch._VF.rnn_tanh, "RNN_RELU": torch._VF.rnn_relu}[mode]
    return kernel(x, hx, weights, bias, num_layers, dropout, training, bidirectional, batch_first)


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


def _why_one_op(node: fx.Node, module: nn.Module) -> str | None:
    """Why a call of `module` stays one op (its hidden units kept), or None."""
    x = node.args[0] if node.args else None
    batched = not node.kwargs and len(node.args) <= 2 and shape_of(x) is not None
    if isinstance(module, nn.RNNCellBase):  # a batched step with positional arguments is written out
        return None if batched and len(shape_of(x)) == 2 else "called on an unbatched step or with keyword arguments"
    if module.proj_size:
        return "proj_size projects the hidden state (kept whole)"
    if not batched or len(shape_of(x)) != 3:
        return "called on a PackedSequence, an unbatched input or with keyword arguments"
    if any(u.op != "call_function" or u.target is not operator.getitem for u in node.users):
        return "its output is read other than by its pieces"
    return None


class RecurrentRule(ModuleRule):
    channels_at = -1

    def write_out(self, node: fx.Node, gm: fx.GraphModule) -> bool:
        module = gm.get_submodule(node.target)
        if _why_one_op(node, module) is not None:
            return False
        graph = gm.graph
        with graph.inserting_before(node):
            weights = [graph.get_attr(f"{node.target}.{name}") for name in module._flat_weights_names]
            training = graph.create_node("get_attr", f"{node.target}.training")  # a flag, not a tensor
        node.kwargs = {"layer": node.target, "mode": module.mode, "num_layers": module.num_layers,
                       "bias": module.bias, "dropout": module.dropout, "training": training,
                       "bidirectional": module.bidirectional, "batch_first": module.batch_first}
        node.op, node.target = "call_function", run_recurrent
        node.args = (node.args[0], node.args[1] if len(node.args) > 1 else None, *weights)
        return True

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        why = _why_one_op(node, module)
        for state in node.all_input_nodes[1:]:  # an initial state holds the hidden units
            if an.space(state) is not None:
                an.block(an.space(state), _KEPT.format(type(module).__name__, why))
        reads = _reads(node) if shape_of(node) is None else []
        for out in [node] if shape_of(node) is not None else [n for n in reads if shape_of(n) is not None]:
            an.block(an.new_space(out, -1, producer=True), _KEPT.format(f"{type(module).__name__} '{node.target}'", why))
        for read in reads:
            an.claim(read)
        consume_channels(node, node.args[0], [an.param_space(w, 1) for w in _input_weights(module)], an)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        _feed_zero_width(node, pc)
        return pc.materialize_dead_inputs(node)

    def resize(self, module: nn.Module) -> None:
        module.input_size = _input_weights(module)[0].shape[1]
        if isinstance(module, nn.RNNCellBase):
            module.hidden_size = module.weight_hh.shape[1]
        else:
            module.hidden_size = module.weight_hh_l0.shape[0] // _BLOCKS[module.mode]
            module._init_flat_weights()  # forward reads the weights through this list


def _feed_zero_width(node: fx.Node, pc: Pruning) -> None:
    """Every input feature closed: the layer runs on a zero-width input."""
    x = node.args[0]
    if pc.is_empty(x):
        dims = list(range(len(shape_of(x)) - 1))
        ref = pc.reference(x, dims, node)
        sizes = tuple(pc.insert(node, "call_method", "size", (ref, d)) for d in dims)
        set_arg(node, 0, "input", pc.insert(node, "call_method", "new_zeros", (ref, (*sizes, 0))))


def _leave_batch_witness(node: fx.Node, pc: Pruning, batch_dim: int) -> None:
    """A zero-width ``(batch, 0)`` tensor read off the layer's input: what a constant after a
    layer that left is expanded to (the batch is dim `batch_dim` of its input)."""
    x = node.args[0]
    ref = pc.reference(x, [batch_dim], node)
    batch = pc.insert(node, "call_method", "size", (ref, batch_dim))
    pc.add_witness(pc.insert(node, "call_method", "new_zeros", (ref, (batch, 0))), (shape_of(x)[batch_dim], 0))


class RecurrentCall(Rule):
    """A recurrent layer written out (:func:`run_recurrent`): its hidden units are one group."""

    channels_at = -1  # the input's features are on its last dim

    def ties_parameter(self, node: fx.Node, value: fx.Node) -> bool:
        return value in node.args[2:]

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x, hx, *weights = node.args
        k = node.kwargs
        directions, per = 1 + k["bidirectional"], 4 if k["bias"] else 2
        cell = [[weights[(layer * directions + d) * per:(layer * directions + d + 1) * per]
                 for d in range(directions)] for layer in range(k["num_layers"])]
        hidden = an.shape(cell[0][0][1])[1]
        units, blocks = np.arange(hidden), _BLOCKS[k["mode"]]
        base = an.new_space(cell[0][0][1], 1, producer=True, title=k["layer"])
        for layer, per_direction in enumerate(cell):
            for read in per_direction:
                w_ih, w_hh, *biases = read
                for w in (w_ih, w_hh, *biases):  # each unit's rows of every gate block
                    an.tie(base, an.param_space(an.attribute(w), 0), np.tile(units, blocks), None)
                # The recurrence and the next layer read the units through these columns: the
                # gate scales them in training and folds into them.
                columns = [(w_hh, units)] + ([(w_ih, np.tile(units, directions))] if layer else [])
                for w, of in columns:
                    space = base if w is cell[0][0][1] else an.new_space(w, 1)
                    if space is not base:
                        an.tie(base, space, of, None)
                    param = an.param_space(an.attribute(w), 1)
                    an.tie(space, param)
                    an.consume(node, w, fold=[param])
        consume_channels(node, x, [an.param_space(an.attribute(read[0]), 1) for read in cell[0]], an)
        for state in (v for v in pytree.tree_leaves(hx) if isinstance(v, fx.Node)):
            space = an.space(state)
            if space is None or space.dim != len(an.shape(state)) - 1:
                an.block(base, _KEPT.format(f"'{k['layer']}'", "its initial state does not carry them where "
                                            "lumos_fx follows (a tensor with the units on its last dim)"))
            else:
                an.tie(base, space)
        for read in _reads(node):
            an.claim(read)
            shape = shape_of(read)
            if shape is None:
                continue
            if read.args[0] is node and read.args[1] == 0:  # the output sequence: every direction's units
                an.tie(base, an.new_space(read, -1), np.tile(units, directions), None)
            else:  # h_n, c_n: (layers x directions, batch, units)
                an.tie(base, an.new_space(read, -1))

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        if pc.is_empty(node.args[3]):  # every hidden unit closed: its outputs, all empty, go with it
            _leave_batch_witness(node, pc, 0 if node.kwargs["batch_first"] else 1)
            return EMPTY
        _feed_zero_width(node, pc)
        outcome = pc.materialize_dead_inputs(node)
        x, hx = node.args[:2]
        node.op, node.target = "call_module", node.kwargs["layer"]  # the module, resized by its rule
        node.args, node.kwargs = (x,) if hx is None else (x, hx), {}
        return outcome


def _zero_state(value) -> bool:
    """Whether `value` is a state of zeros made in forward (``torch.zeros(b, h)``, ``x.new_zeros``,
    ``torch.zeros_like`` of one)."""
    if not isinstance(value, fx.Node):
        return False
    if value.op == "call_function" and value.target is torch.zeros_like:
        return _zero_state(value.args[0])
    return value.op == "call_function" and value.target is torch.zeros or value.op == "call_method" and \
        value.target == "new_zeros"


def run_cell(x, hx, w_ih, w_hh, b_ih, b_hh, *, cell: str, kernel: str):
    """The forward of recurrent cell `cell` (an ``LSTMCell``, ``GRUCell`` or ``RNNCell``, whose
    forward calls ``torch._VF.<kernel>``) on a batch step `x` and state `hx` (None: zeros),
    with its weights."""
    if hx is None:
        h = x.new_zeros(x.shape[0], w_hh.shape[1])
        hx = (h, h) if kernel == "lstm_cell" else h
    return getattr(torch._VF, kernel)(x, hx, w_ih, w_hh, b_ih, b_hh)


def _cell_kernel(module: nn.RNNCellBase) -> str:
    if isinstance(module, nn.LSTMCell):
        return "lstm_cell"
    return "gru_cell" if isinstance(module, nn.GRUCell) else f"rnn_{module.nonlinearity}_cell"


class CellRule(RecurrentRule):
    """``LSTMCell``, ``GRUCell``, ``RNNCell`` on a batch step: written out after tracing as
    :func:`run_cell` on its weights read in the graph (see the module docstring)."""

    def write_out(self, node: fx.Node, gm: fx.GraphModule) -> bool:
        module = gm.get_submodule(node.target)
        if _why_one_op(node, module) is not None:
            return False
        graph = gm.graph
        with graph.inserting_before(node):
            weights = [graph.get_attr(f"{node.target}.{name}") if getattr(module, name) is not None else None
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            hx = node.args[1] if len(node.args) > 1 else None
            if isinstance(hx, fx.Node) and isinstance(module, nn.LSTMCell):  # the tuple a step returned
                hx = tuple(graph.call_function(operator.getitem, (hx, i)) for i in (0, 1))
        node.kwargs = {"cell": node.target, "kernel": _cell_kernel(module)}
        node.op, node.target, node.args = "call_function", run_cell, (node.args[0], hx, *weights)
        return True


class CellCall(Rule):
    """A cell step written out (:func:`run_cell`): every step's units are one group through
    the weights, whose columns of :math:`W_{hh}` the gate scales, as the layers after read them."""

    channels_at = -1

    def ties_parameter(self, node: fx.Node, value: fx.Node) -> bool:
        return value in node.args[2:]

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x, hx, w_ih, w_hh, *biases = node.args
        hidden = an.shape(w_hh)[1]
        units, blocks = np.arange(hidden), an.shape(w_ih)[0] // hidden
        base = an.new_space(w_hh, 1, producer=True, title=node.kwargs["cell"])
        for w in (w_ih, w_hh, *biases):
            if w is not None:  # each unit's rows of every gate block
                an.tie(base, an.param_space(an.attribute(w), 0), np.tile(units, blocks), None)
        columns = an.param_space(an.attribute(w_hh), 1)
        an.tie(base, columns)
        an.consume(node, w_hh, fold=[columns])  # the state enters through these columns: gated there
        consume_channels(node, x, [an.param_space(an.attribute(w_ih), 1)], an)
        for state in (v for v in pytree.tree_leaves(hx) if isinstance(v, fx.Node)):
            space = an.space(state)
            if _zero_state(state):
                if space is not None:
                    an.accept(space)
            elif space is None or space.dim != len(an.shape(state)) - 1:
                an.block(base, _KEPT.format(f"'{node.kwargs['cell']}'", "its initial state is neither zeros nor "
                                            "a tensor with the units on its last dim"))
            else:
                an.tie(base, space)
        outs = [node] if shape_of(node) is not None else _reads(node)
        for out in outs:
            an.claim(out)
            an.tie(base, an.new_space(out, -1))

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        if pc.is_empty(node.args[3]):  # every hidden unit closed: its outputs, all empty, go with it
            _leave_batch_witness(node, pc, 0)
            return EMPTY
        _feed_zero_width(node, pc)
        outcome = pc.materialize_dead_inputs(node)
        x, hx = node.args[:2]
        if all(_zero_state(v) for v in pytree.tree_leaves(hx)):  # the cell's own zeros, of its new size
            hx = None
        node.op, node.target = "call_module", node.kwargs["cell"]  # the module, resized by its rule
        node.args, node.kwargs = (x,) if hx is None else (x, hx), {}
        return outcome


def _lstm_layer_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    r"""FLOPs of one direction of one layer of ``nn.LSTM`` on the CPU kernel, which torch's
    FlopCounterMode has no formula for: both products of every step,
    :math:`2\,T B\, (4H \cdot I + 4H \cdot H)`, as it counts a GRU's."""
    steps_times_batch = input_shape[0] * input_shape[1]
    return 2 * steps_times_batch * (w_ih_shape[0] * w_ih_shape[1] + w_hh_shape[0] * w_hh_shape[1])


if torch.ops.aten.mkldnn_rnn_layer.default not in flop_counter.flop_registry:
    flop_counter.register_flop_formula(torch.ops.aten.mkldnn_rnn_layer)(_lstm_layer_flops)

REGISTRY.register(RecurrentRule(), nn.LSTM, nn.GRU, nn.RNN)
REGISTRY.register(CellRule(), nn.LSTMCell, nn.GRUCell, nn.RNNCell)
REGISTRY.register(RecurrentCall(), run_recurrent)
REGISTRY.register(CellCall(), run_cell)
