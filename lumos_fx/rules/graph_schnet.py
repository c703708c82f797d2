r"""SchNet's continuous-filter convolution ``CFConv``, traced through its computation, so that
its linear maps and its filter network reach the ordinary layer rules:

.. math::
    \mathbf{x}'_i = W_2 \sum_{j \in \mathcal{N}(i)} \big(W_1 \mathbf{x}_j\big) \odot
    \Big(h_\Theta(\mathbf{e}_{j,i})\; \tfrac{1}{2}\big(\cos(\pi d_{j,i} / r_c) + 1\big)\Big) + \mathbf{b}_2,

with :math:`d_{j,i}` the distance (``edge_weight``), :math:`\mathbf{e}_{j,i}` its expansion
(``edge_attr``, SchNet's Gaussian smearing), :math:`h_\Theta` the filter network ``nn`` and
:math:`r_c` the cutoff. Written as ``lin1``, ``index_select`` of the sources, the product
with the filter (the cosine cutoff one number per edge), ``torch_geometric.utils.scatter``
(sum) onto the targets and ``lin2``: filter :math:`f` is channel :math:`f` of the product, so
the filters (``num_filters``) are one group tying ``lin1``'s rows, the filter network's last
rows and ``lin2``'s columns, and the filter network's hidden width is a group of its own.
``InteractionBlock`` and the ``SchNet`` model are ordinary modules around it and are traced
as they are: SchNet's hidden channels (the embedding, every block's ``lin`` rows and
``conv.lin1`` columns, the head's ``lin1`` columns) are one group through the residual sum,
each block's ``conv.lin2`` rows another. The Gaussians of the distance expansion stay
(``d.view(-1, 1) - offset.view(1, -1)`` broadcasts edges against Gaussians, which the
element-wise rules refuse). SchNet's own interaction graph calls ``radius_graph``, which
needs pyg-lib or torch-cluster; given one written in torch (``interaction_graph=``), the
model is traced and cut as above. Other flows and bipartite calls are called as one op
and keep their channels.
"""

from __future__ import annotations

import math

import torch
from torch import fx
from torch_geometric import utils
from torch_geometric.nn.models.schnet import CFConv

from .api import LEAF, Connecting, ModuleRule, TraceError, Tracing, Unsupported, trace_through
from .registry import REGISTRY


class CFConvRule(ModuleRule):
    def tracing(self, module: CFConv) -> Tracing:
        return LEAF if module.flow != "source_to_target" else trace_through(_cfconv)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("written out only with flow='source_to_target'; called as one op, its channels are kept")


def _cfconv(conv, x, edge_index, edge_weight, edge_attr):
    """``CFConv.forward`` over one node set, with traceable ops."""
    if isinstance(x, tuple):
        raise TraceError(
            "CFConv called on a (source, target) pair: lumos_fx writes it out only over one node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")
    cutoff = 0.5 * (torch.cos(edge_weight * math.pi / conv.cutoff) + 1.0)
    filters = conv.nn(edge_attr) * cutoff.view(-1, 1)
    messages = conv.lin1(x).index_select(0, edge_index[0]) * filters
    # Through the module attribute: fx records utils.scatter as one op in PyG's namespaces.
    return conv.lin2(utils.scatter(messages, edge_index[1], 0, dim_size=x.size(0), reduce="sum"))


REGISTRY.register(CFConvRule(), CFConv)
