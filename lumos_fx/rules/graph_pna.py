r"""``PNAConv`` (principal neighbourhood aggregation), traced through its computation, so that
its towers' pre- and post-MLPs, the edge encoder and the output ``lin`` reach the ordinary
layer rules:

.. math::
    \mathbf{x}'_i = \mathrm{lin}\Big(\big\Vert_t\; \gamma_t\Big(\mathbf{x}_i,
    \underset{s \in S}{\big\Vert}\; \underset{a \in A}{\big\Vert}\;
    s(d_i)\, a_{j \in \mathcal{N}(i)}\, h_t(\mathbf{x}_i \Vert \mathbf{x}_j \Vert \mathbf{e}_{j,i})\Big)\Big),

with aggregators :math:`A` (mean, min, max, std ...) and degree scalers :math:`S` (identity,
amplification, attenuation ...) of PyG's ``DegreeScalerAggregation``, which is traced
too: every aggregator reduces over the edges channel by channel and every scaler multiplies
a node's row by a function of its degree, so the pre-MLP's output channels join one group
through the ``cat`` of all of them. Written out for one tower, one node set and an
``edge_index`` tensor; more towers (their ``repeat``), bipartite calls and other flows are
called as one op and keep their channels.
"""

from __future__ import annotations

import torch
from torch import fx
from torch_geometric.nn import PNAConv

from .api import LEAF, Connecting, ModuleRule, TraceError, Tracing, Unsupported, trace_through
from .registry import REGISTRY


class PNARule(ModuleRule):
    def tracing(self, module: PNAConv) -> Tracing:
        if module.towers != 1 or module.flow != "source_to_target":
            return LEAF
        return trace_through(_pna)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("written out only with towers=1 and flow='source_to_target'; called as one op, its "
                          "channels are kept")


def _pna(conv, x, edge_index, edge_attr=None):
    """``PNAConv.forward`` for one tower, one node set and a tensor ``edge_index``."""
    if isinstance(x, tuple):
        raise TraceError(
            "PNAConv called on a (source, target) pair: lumos_fx writes out only PNAConv over one node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")
    x = x.unsqueeze(1)  # (nodes, towers = 1, F_in)
    x_i, x_j = x.index_select(0, edge_index[1]), x.index_select(0, edge_index[0])
    parts = [x_i, x_j]
    if edge_attr is not None:
        parts.append(conv.edge_encoder(edge_attr).unsqueeze(1))
    messages = conv.pre_nns[0](torch.cat(parts, dim=-1)[:, 0]).unsqueeze(1)
    out = conv.aggr_module(messages, edge_index[1], dim_size=x.size(0), dim=0)
    out = torch.cat([x, out], dim=-1)
    return conv.lin(conv.post_nns[0](out[:, 0]))


REGISTRY.register(PNARule(), PNAConv)
