r"""``EdgeConv`` (DGCNN), traced through its computation, so that its inner ``nn`` (an MLP)
reaches the ordinary layer rules:

.. math::
    \mathbf{x}'_i = \square_{j \in \mathcal{N}(i)}
    h_\Theta\big(\mathbf{x}_i \,\Vert\, \mathbf{x}_j - \mathbf{x}_i\big),

with :math:`\square` the layer's aggregation (max by default, or sum, mean, min), written as
``index_select`` of the targets and sources, a ``cat`` on the channels, the MLP on every
edge and ``torch_geometric.utils.scatter`` onto the targets (``edge_index`` a tensor): the pair's two halves read
the same node channels, so both column blocks of the MLP's first weight go with them. A
node with no neighbours gets 0, as PyG's scatter gives it. Other aggregations or flows,
and bipartite calls, are called as one op and keep their channels.
"""

from __future__ import annotations

import torch
from torch import fx
from torch_geometric import utils
from torch_geometric.nn import EdgeConv

from .api import LEAF, Connecting, ModuleRule, TraceError, Tracing, Unsupported, trace_through
from .registry import REGISTRY

_REDUCES = {"add": "sum", "sum": "sum", "mean": "mean", "max": "max", "min": "min"}


class EdgeConvRule(ModuleRule):
    def tracing(self, module: EdgeConv) -> Tracing:
        if not isinstance(module.aggr, str) or module.aggr not in _REDUCES or module.flow != "source_to_target":
            return LEAF
        return trace_through(_edge_conv)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("written out only with aggr in sum/mean/max/min and flow='source_to_target'; called as "
                          "one op, its channels are kept")


def _edge_conv(conv, x, edge_index):
    """``EdgeConv.forward`` for one node set and a tensor ``edge_index``, with traceable ops."""
    if isinstance(x, tuple):
        raise TraceError(
            "EdgeConv called on a (source, target) pair: lumos_fx writes out only EdgeConv over one node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")
    x_i, x_j = x.index_select(0, edge_index[1]), x.index_select(0, edge_index[0])
    messages = conv.nn(torch.cat([x_i, x_j - x_i], dim=-1))
    # Through the module attribute: fx records utils.scatter as one op in PyG's namespaces.
    return utils.scatter(messages, edge_index[1], 0, dim_size=x.size(0), reduce=_REDUCES[conv.aggr])


REGISTRY.register(EdgeConvRule(), EdgeConv)
