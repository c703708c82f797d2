r"""torch_geometric's functional ops that reduce over nodes or edges, channel by channel.

``global_{add,mean,max}_pool(x, batch)``, ``scatter(src, index, dim, reduce=...)`` and
``softmax(src, index)`` (over each target's edges) compute, for every channel :math:`c` and every graph (or target) :math:`g`,

.. math::
    y_{g c} = \bigoplus_{i : \mathrm{index}_i = g} x_{i c},
    \qquad \oplus \in \{\textstyle\sum, \text{mean}, \max, \min, \prod\},

so channel :math:`c` of the output is channel :math:`c` of the input alone: a channel closed
at a consumer downstream goes from both. The index is read whole. A constant input is
expanded to its runtime number of nodes (its sum over a graph depends on the graph's
size); an input whose channels are all closed leaves an output with none.
"""

from __future__ import annotations

import torch
from torch import fx
from torch_geometric import utils
from torch_geometric.nn import pool

from .api import Connecting, Outcome, Pruning, Rule, Unsupported, arg, normalize_dim, shape_of
from .indexing import IndexSelect
from .registry import REGISTRY


class ReduceOverIndex(Rule):
    """Pooling and scatter: the reduced dim (nodes, edges) is never the channel dim."""

    channels_at = -1

    def __init__(self, source: str, dim_at: int | None) -> None:
        self.source, self.dim_at = source, dim_at  # the input's name; where `dim` is passed (None: nodes, -2)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = arg(node, 0, self.source)
        src = an.space(x)
        if src is None:
            return
        ndim = len(an.shape(x))
        reduced = -2 if self.dim_at is None else arg(node, self.dim_at, "dim", 0)
        if not isinstance(reduced, int) or normalize_dim(reduced, ndim) == src.dim:
            raise Unsupported("reduces over the channel dim")
        if len(an.shape(node)) != ndim:
            raise Unsupported("changes the number of dims")
        an.follow(node, src, src.dim)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        if self.dim_at is None and pc.is_const(arg(node, 0, self.source)):
            _add_graph_count_witness(node, pc)
        return super().prune(node, pc)

    def emptied(self, node: fx.Node, pc: Pruning) -> None:
        if self.dim_at is None:
            _add_graph_count_witness(node, pc)


def _add_graph_count_witness(node: fx.Node, pc: Pruning) -> None:
    """A pooling of zero channels, ``pool(batch.new_zeros(N, 0), batch)``: its size is the
    number of graphs, which a constant downstream (every pooled channel closed) is expanded
    to; nothing else in the pruned model has it."""
    batch = arg(node, 1, "batch")
    if not isinstance(batch, fx.Node):
        return
    n = pc.insert(node, "call_method", "size", (batch, 0))
    empty = pc.insert(node, "call_method", "new_zeros", (batch, (n, 0)), {"dtype": torch.float32})
    witness = pc.insert(node, "call_function", node.target, (empty, *node.args[1:]), dict(node.kwargs))
    pc.add_witness(witness, tuple(shape_of(node)))


# Their code reads tensor values (the number of graphs off `batch`): the tracer records one op each.
REGISTRY.record_as_one_op(pool.global_add_pool, pool.global_mean_pool, pool.global_max_pool, utils.scatter,
                          utils.softmax, utils.to_dense_batch, utils.degree)
REGISTRY.register(ReduceOverIndex("x", None), pool.global_add_pool, pool.global_mean_pool, pool.global_max_pool)
REGISTRY.register(ReduceOverIndex("src", 2), utils.scatter)
REGISTRY.register(ReduceOverIndex("src", 4), utils.softmax)  # per channel, over each target's edges
# torch_geometric replaces torch.index_select with a function of its own (for its HashTensor).
REGISTRY.register(IndexSelect(), torch.index_select)
