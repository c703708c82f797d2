r"""``PointNetConv`` (PointNet++'s set abstraction), traced through its computation, so that its
``local_nn`` and ``global_nn`` reach the ordinary layer rules:

.. math::
    \mathbf{x}^{\prime}_i = \gamma_{\mathbf{\Theta}} \left( \square_{j \in
    \mathcal{N}(i) \cup \{ i \}} h_{\mathbf{\Theta}} ( \mathbf{x}_j \,\Vert\,
    \mathbf{p}_j - \mathbf{p}_i) \right),

with :math:`h` the ``local_nn`` on every edge, :math:`\gamma` the ``global_nn`` and
:math:`\square` the layer's aggregation (max by default, or sum, mean, min), written as the
self loops PyG adds (``remove_self_loops``, ``add_self_loops``), ``index_select`` of both
ends, a ``cat`` on the channels and ``torch_geometric.utils.scatter`` onto the targets
(``edge_index`` a tensor): each aggregated channel is one output channel of :math:`h`, so
the hidden widths of :math:`h`, its output width (with :math:`\gamma`'s columns) and those
of :math:`\gamma` are cut.

The relative positions :math:`\mathbf{p}_j - \mathbf{p}_i` are read by the first layer of
:math:`h` column by column like the features beside them, so a coordinate the model does
not use may close as an input feature does (the pruned model still takes every coordinate
and selects the kept ones); the node features' columns of that layer go with the channels
of the layer producing them. Bipartite calls, and other aggregations or flows, are called as one op and keep their
channels.
"""

from __future__ import annotations

import torch
from torch_geometric import utils
from torch_geometric.nn import PointNetConv

from .api import LEAF, TraceError, Tracing, trace_through
from .graph_edge_conv import _REDUCES, EdgeConvRule
from .registry import REGISTRY

class PointNetRule(EdgeConvRule):
    """Written out under EdgeConv's conditions (a sum, mean, max or min aggregation and
    flow='source_to_target'), as PointNetConv computes."""

    def tracing(self, module: PointNetConv) -> Tracing:
        return LEAF if super().tracing(module) is LEAF else trace_through(_point_net)


def _point_net(conv, x, pos, edge_index):
    """``PointNetConv.forward`` for one node set and a tensor ``edge_index``, with traceable ops."""
    if isinstance(x, tuple) or isinstance(pos, tuple):
        raise TraceError(
            "PointNetConv called on a (source, target) pair: lumos_fx writes out only PointNetConv over one "
            "node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")
    if conv.add_self_loops:
        edge_index = _with_self_loops(edge_index, pos)
    src, dst = edge_index[0], edge_index[1]
    messages = pos.index_select(0, src) - pos.index_select(0, dst)
    if x is not None:
        messages = torch.cat([x.index_select(0, src), messages], dim=-1)
    if conv.local_nn is not None:
        messages = conv.local_nn(messages)
    # Through the module attribute: fx records utils.scatter as one op in PyG's namespaces.
    out = utils.scatter(messages, dst, 0, dim_size=pos.size(0), reduce=_REDUCES[conv.aggr])
    return out if conv.global_nn is None else conv.global_nn(out)


def _with_self_loops(edge_index, pos):
    """PyG's ``remove_self_loops`` then ``add_self_loops`` for an ``edge_index`` tensor, without
    their checks of its sparse layout (guards in the cut model)."""
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    loops = torch.arange(pos.size(0), device=edge_index.device).view(1, -1).repeat(2, 1)
    return torch.cat([edge_index, loops], dim=1)


REGISTRY.register(PointNetRule(), PointNetConv)
