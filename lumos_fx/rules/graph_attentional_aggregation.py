r"""``torch_geometric.nn.aggr.AttentionalAggregation`` (global soft-attention pooling),
traced through its computation, so that its ``gate_nn`` and ``nn`` reach the ordinary rules:

.. math::
    \mathbf r_g = \sum_{i :\, \mathrm{index}_i = g}
        \operatorname{softmax}_{i :\, \mathrm{index}_i = g}\big(h_{\mathrm{gate}}(\mathbf x_i)\big)
        \odot h_\Theta(\mathbf x_i),

written as the two networks, ``torch_geometric.utils.softmax`` over each graph's nodes (channel
by channel), a product and ``global_add_pool``. A gate of width 1 (node-level) scales whole
rows and is no channel group; a gate as wide as :math:`h_\Theta`'s output (feature-level)
multiplies it channel by channel, which ties the two networks' output channels (without
:math:`h_\Theta`, the gate network's outputs are the input's channels). ``Aggregation.__call__`` infers ``dim_size`` from the index
values; here the recorded softmax and pooling do it when they run. Calls with ``ptr`` (segment
reductions) or over another dim than the nodes' (-2) are refused.
"""

from __future__ import annotations

import torch
from torch_geometric import utils
from torch_geometric.nn import pool
from torch_geometric.nn.aggr import AttentionalAggregation

from .api import ModuleRule, TraceError, Tracing, trace_through
from .registry import REGISTRY


def _attentional(aggr, x, index=None, ptr=None, dim_size=None, dim=-2):
    """``AttentionalAggregation.__call__`` for an ``index`` (or none: one graph), with traceable ops."""
    if ptr is not None or dim not in (-2, x.dim() - 2):
        raise TraceError(
            "AttentionalAggregation called with ptr= or over another dim than -2: lumos_fx writes it out only "
            "for an index over the nodes.\n"
            "fix: pass index= (the batch vector) instead of ptr=, with the nodes at dim -2.")
    if index is None:
        index, dim_size = x.new_zeros(x.size(dim), dtype=torch.long), 1
    gate = aggr.gate_nn(x) if aggr.gate_mlp is None else aggr.gate_mlp(x, batch=index, batch_size=dim_size)
    if aggr.mlp is not None:
        x = aggr.mlp(x, batch=index, batch_size=dim_size)
    elif aggr.nn is not None:
        x = aggr.nn(x)
    # Through the module attribute: fx patches the functions it records as one op in PyG's
    # namespaces, not in this module's globals.
    gate = utils.softmax(gate, index, None, dim_size, dim)
    # A global pooling (the sum over dim -2) rather than a scatter: where every channel closes,
    # its rule leaves the witness of the graph count that the constant downstream is expanded to.
    return pool.global_add_pool(gate * x, index, dim_size)


class AttentionalAggregationRule(ModuleRule):
    def tracing(self, module: AttentionalAggregation) -> Tracing:
        return trace_through(_attentional)


REGISTRY.register(AttentionalAggregationRule(), AttentionalAggregation)
