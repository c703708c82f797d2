r"""``GATEConv``, the edge-aware attention layer of AttentiveFP
(``torch_geometric.nn.models.attentive_fp``), traced through its computation, so that its
linear layers and attention vectors reach the ordinary rules:

.. math::
    h_{ji} = \mathrm{LeakyReLU}\big(W_1 [x_j \,\Vert\, e_{ji}]\big), \qquad
    \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal N(i)}
        \mathrm{LeakyReLU}\big(a_l^\top h_{ji} + a_r^\top x_i\big), \qquad
    y_i = \sum_{j \in \mathcal N(i)} \alpha_{ij}\, W_2 x_j + b,

written as ``index_select`` of both ends, a ``cat`` with the edge features, ``@`` with the
attention vectors, ``torch_geometric.utils.softmax`` over each target's edges and
``torch_geometric.utils.scatter`` (sum) onto the targets. The score :math:`\alpha_{ij}` is one
number per edge, so: the node features are read linearly by :math:`W_1`'s first column block,
:math:`a_r` and :math:`W_2` (one input group), the edge features by :math:`W_1`'s second
block; the hidden channels of :math:`h` are a group of their own (:math:`W_1`'s rows with
:math:`a_l`'s entries), and the output channels are :math:`W_2`'s rows with :math:`b`. The
``cat`` puts the node and edge channels in one group (a unit each): where the node channels
are kept whole (AttentiveFP's GRU state), so are the edge features. The score column, of
width 1, scales every channel of the messages and is no channel group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric import utils
from torch_geometric.nn.models.attentive_fp import GATEConv

from .api import ModuleRule, Tracing, trace_through
from .registry import REGISTRY


def _gate_conv(conv, x, edge_index, edge_attr):
    """``GATEConv.forward`` for a tensor ``edge_index``, with traceable ops."""
    source, target = edge_index[0], edge_index[1]
    x_j, x_i = x.index_select(0, source), x.index_select(0, target)
    hidden = F.leaky_relu(conv.lin1(torch.cat([x_j, edge_attr], dim=-1)))
    # The scores stay (edges, 1), a column that scales every channel of the messages.
    score = F.leaky_relu(hidden @ conv.att_l.t() + x_i @ conv.att_r.t())
    # Through the module attribute: fx patches the functions it records as one op in PyG's
    # namespaces, not in this module's globals.
    alpha = utils.softmax(score, target, num_nodes=x.size(0))
    alpha = F.dropout(alpha, p=conv.dropout, training=conv.training)
    messages = conv.lin2(x_j) * alpha
    return utils.scatter(messages, target, 0, dim_size=x.size(0), reduce="sum") + conv.bias


class GATEConvRule(ModuleRule):
    def tracing(self, module: GATEConv) -> Tracing:
        return trace_through(_gate_conv)


REGISTRY.register(GATEConvRule(), GATEConv)
