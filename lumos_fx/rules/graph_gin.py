r"""``GINConv`` and ``GINEConv``, traced through their computation, so that their inner
``nn`` reaches the ordinary layer rules:

.. math::
    \mathrm{GIN}(x)_i = h_\Theta\Big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)} x_j\Big),
    \qquad
    \mathrm{GINE}(x, e)_i = h_\Theta\Big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)}
    \operatorname{ReLU}(x_j + W_e e_{j,i} + b_e)\Big)

written as ``index_select`` of the sources, ``torch_geometric.utils.scatter`` (sum) onto the
targets and element-wise ops: the edge embedding :math:`W_e e + b_e` is added channel by
channel to :math:`x_j`, so its output channels join the node group (Lumos eq. 9). Other
aggregations or flows are called as one op and keep their channels.
"""

from __future__ import annotations

from torch import fx, nn
from torch_geometric import utils
from torch_geometric.nn import GINConv, GINEConv

from .api import LEAF, Connecting, ModuleRule, TraceError, Tracing, Unsupported, trace_through
from .registry import REGISTRY


class GINRule(ModuleRule):
    def __init__(self, function) -> None:
        self.function = function

    def tracing(self, module: nn.Module) -> Tracing:
        if module.aggr != "add" or module.flow != "source_to_target":
            return LEAF
        return trace_through(self.function)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("written out only with aggr='add' and flow='source_to_target'; called as one op, "
                          "its channels are kept")


def _plain_call(conv, x, size) -> None:
    if isinstance(x, tuple) or size is not None:
        raise TraceError(
            f"{type(conv).__name__} called on a (source, target) pair or with size=: lumos_fx writes out "
            "only GIN layers over one node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")


def _neighbour_sum(messages, edge_index, n):
    # Through the module attribute: fx patches the functions it records as one op in PyG's
    # namespaces, not in this module's globals.
    return utils.scatter(messages, edge_index[1], 0, dim_size=n, reduce="sum")


def _self_term(conv, x):
    """:math:`(1 + \\epsilon) x`, as ``x + eps * x``: ``1 + eps`` of a buffer would be computed
    while tracing and stored as an unnamed constant; ``eps * x`` reads the buffer by name."""
    return x + conv.eps * x


def _gin(conv, x, edge_index, size=None):
    """``GINConv.forward`` for a tensor ``edge_index``, written with traceable ops."""
    _plain_call(conv, x, size)
    aggregated = _neighbour_sum(x.index_select(0, edge_index[0]), edge_index, x.size(0))
    return conv.nn(aggregated + _self_term(conv, x))


def _gine(conv, x, edge_index, edge_attr=None, size=None):
    """``GINEConv.forward`` for a tensor ``edge_index``, written with traceable ops."""
    _plain_call(conv, x, size)
    edge = edge_attr if conv.lin is None else conv.lin(edge_attr)
    messages = (x.index_select(0, edge_index[0]) + edge).relu()
    return conv.nn(_neighbour_sum(messages, edge_index, x.size(0)) + _self_term(conv, x))


REGISTRY.register(GINRule(_gin), GINConv)
REGISTRY.register(GINRule(_gine), GINEConv)
