r"""torch_geometric's ``TransformerConv`` (the graph transformer of Shi et al.), cut by heads.

With :math:`H` heads of :math:`C` channels, projections :math:`W_q, W_k, W_v` (rows grouped
by head, with biases), the edge projection :math:`W_e` (``edge_dim`` set, no bias) and the
skip projection :math:`W_s`, head :math:`h` of node :math:`i` computes

.. math::
    e_{ji} = W_e\, \mathrm{edge}_{ji}, \qquad
    \alpha^h_{ij} = \operatorname{softmax}_{j \in \mathcal N(i)}
        \frac{(W_q x_i)^{h\top} (W_k x_j + e_{ji})^h}{\sqrt C}, \qquad
    y^h_i = \sum_{j \in \mathcal N(i)} \alpha^h_{ij}\, (W_v x_j + e_{ji})^h,

then ``concat=True`` lays the heads side by side, :math:`y_i = [y^1_i \| \dots \| y^H_i]`,
``concat=False`` averages them, and ``root_weight=True`` adds the skip, :math:`y_i + W_s x_i`
(``beta=True`` mixes the two instead, :math:`\beta_i W_s x_i + (1 - \beta_i) y_i` with
:math:`\beta_i = \sigma(w_\beta^\top [y_i \| W_s x_i \| y_i - W_s x_i])`).

- Input channels: every projection of :math:`x` is linear in it, so a gate on x folds into
  the columns of :math:`W_q, W_k, W_v, W_s`; a gate on the edge features folds into
  :math:`W_e`'s. An edge group closed altogether leaves the layer without ``edge_attr``
  (:math:`e = 0`).
- Output channels, ``concat=True``: every channel of a head enters that head's scores, so
  the unit is the head. Closing head :math:`h` removes its rows of :math:`W_q, W_k, W_v, W_e`
  and :math:`W_s` (with their biases); the other heads' scores and outputs do not read them,
  and :math:`\sqrt C` stays. ``concat=False`` sums over heads inside each output channel, and
  ``beta=True`` makes :math:`\beta_i`, which scales every channel, read every channel of
  :math:`y_i` and :math:`W_s x_i`: slicing :math:`w_\beta` with the kept channels would change
  :math:`\beta_i` (the closed channels are gated downstream, not inside the layer), so both keep
  the output whole.
- Every input channel closed: the scores are :math:`b_q^\top (b_k + e_{ji}) / \sqrt C` and the
  output :math:`\sum_j \alpha_{ij} (b_v + e_{ji})` (:math:`b_v` without edge features) on a node
  with incoming edges but 0 on one without (no self loops), which depends on the graph: the
  layer is kept and fed a zero-width input.

A ``(source, target)`` pair, ``return_attention_weights=`` and aggregations other than
the channel-by-channel ones (sum, mean, max, min, mul, std, var) are refused.
"""

from __future__ import annotations

import numpy as np
from torch import fx
from torch_geometric.nn import TransformerConv

from .api import Connecting, Space, Unsupported
from .graph_attention import GraphAttentionRule
from .registry import REGISTRY

# Aggregations that reduce every channel over the edges on its own (a head's outputs read only its channels).
_CHANNELWISE_AGGR = frozenset({"add", "sum", "mean", "max", "min", "mul", "std", "var"})



def _channelwise(module: TransformerConv) -> bool:
    return isinstance(module.aggr, str) and module.aggr in _CHANNELWISE_AGGR


class TransformerConvRule(GraphAttentionRule):
    def projections(self, module: TransformerConv):
        # lin_skip exists even with root_weight=False (unused): cut with the others, it keeps the
        # module constructible at its new sizes.
        return [module.lin_query, module.lin_key, module.lin_value, module.lin_skip]

    def closed_output(self, module: TransformerConv):
        return None

    def output_bias(self, module: TransformerConv):
        return None  # its biases are its projections'

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        if not _channelwise(module):
            raise Unsupported(f"aggregates with {module.aggr!r}, not known to reduce channel by channel")
        super().connect(node, an)

    def outputs_whole(self, module: TransformerConv) -> str | None:
        if module.concat and module.beta:
            return ("beta=True mixes skip and attention by a weight computed from every output channel "
                    "(lin_beta reads [out, x_r, out - x_r])")
        return super().outputs_whole(module)

    def tie_heads(self, out: Space, module: TransformerConv, an: Connecting) -> None:
        # No parameter is indexed by head: each channel is tied to its head's first query row too
        # (the rows are tied one to one as well), which joins the head's channels into one unit.
        per_head = module.out_channels
        channels = np.arange(module.heads * per_head)
        an.tie(out, an.param_space(module.lin_query.weight, 0), channels, channels // per_head * per_head)

    def source(self, m: TransformerConv) -> str | None:
        if not _channelwise(m):  # an aggregation module's repr is no constructor argument
            return None  # export then names the module it cannot write
        return (f"torch_geometric.nn.TransformerConv({m.in_channels}, {m.out_channels}, heads={m.heads}, "
                f"concat={m.concat}, beta={m.beta}, dropout={m.dropout}, edge_dim={m.edge_dim}, "
                f"bias={m.lin_query.bias is not None}, root_weight={m.root_weight}, aggr={m.aggr!r}, "
                f"flow={m.flow!r})")


REGISTRY.register(TransformerConvRule(), TransformerConv)
