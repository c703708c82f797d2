r"""``PNAConv`` (principal neighbourhood aggregation), traced through its computation, so that
its towers' pre- and post-MLPs, the edge encoder and the output ``lin`` reach the ordinary
layer rules:

.. math::
    \mathbf{x}'_i = \mathrm{lin}\Big(\big\Vert_{t=1}^{T}\; \gamma_t\Big(\mathbf{x}^t_i,
    \underset{s \in S}{\big\Vert}\; \underset{a \in A}{\big\Vert}\;
    s(d_i)\, a_{j \in \mathcal{N}(i)}\, h_t(\mathbf{x}^t_i \Vert \mathbf{x}^t_j \Vert E\,\mathbf{e}_{j,i})\Big)\Big),

with aggregators :math:`A` (mean, min, max, std ...) and degree scalers :math:`S` (identity,
amplification, attenuation ...) of PyG's ``DegreeScalerAggregation``, which is traced
too: every aggregator reduces over the edges channel by channel and every scaler multiplies
a node's row by a function of its degree, so the pre-MLP's output channels join one group
through the ``cat`` of all of them. Tower :math:`t` reads :math:`\mathbf{x}^t`: all of
:math:`\mathbf{x}` (PyG's ``repeat``), or with ``divide_input=True`` its own slice
:math:`\mathbf{x}_{[t F, (t+1) F)}` of ``F = in_channels / T`` channels (its ``view``), which
only that tower's pre- and post-MLP read; the edge encoder :math:`E` is shared by every
tower. Each tower is written out on its own and the towers' outputs are concatenated into
``lin`` (its column blocks go with each tower's post-MLP), so the widths of every tower are
cut. Written out for one node set and an ``edge_index`` tensor; bipartite calls and other
flows are called as one op and keep their channels.
"""

from __future__ import annotations

import torch
from torch import fx
from torch_geometric.nn import PNAConv

from .api import LEAF, Connecting, ModuleRule, TraceError, Tracing, Unsupported, trace_through
from .registry import REGISTRY


class PNARule(ModuleRule):
    def tracing(self, module: PNAConv) -> Tracing:
        if module.flow != "source_to_target":
            return LEAF
        return trace_through(_pna)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("written out only with flow='source_to_target'; called as one op, its channels are kept")


def _pna(conv, x, edge_index, edge_attr=None):
    """``PNAConv.forward`` for one node set and a tensor ``edge_index``, tower by tower."""
    if isinstance(x, tuple):
        raise TraceError(
            "PNAConv called on a (source, target) pair: lumos_fx writes out only PNAConv over one node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")
    edges = None if edge_attr is None else conv.edge_encoder(edge_attr)
    towers = [_tower(conv, t, x, edge_index, edges) for t in range(conv.towers)]
    return conv.lin(torch.cat(towers, dim=-1))


def _tower(conv, t: int, x, edge_index, edges):
    """Tower `t`: its pre-MLP on every edge, the degree-scaled aggregates, its post-MLP."""
    if conv.divide_input:
        x = x[:, t * conv.F_in:(t + 1) * conv.F_in]
    parts = [x.index_select(0, edge_index[1]), x.index_select(0, edge_index[0])]
    messages = conv.pre_nns[t](torch.cat(parts if edges is None else [*parts, edges], dim=-1))
    # (edges, 1, channels), the layout of PyG's towers: a 2-D input would take PyG's fused
    # aggregation, which counts the edges with messages.new_zeros, a read the cut cannot keep
    # once every message channel has closed.
    out = conv.aggr_module(messages.unsqueeze(1), edge_index[1], dim_size=x.size(0), dim=0)[:, 0]
    return conv.post_nns[t](torch.cat([x, out], dim=-1))


REGISTRY.register(PNARule(), PNAConv)
