r"""``SimpleConv``, PyG's parameter-free message passing (PMLP's propagation), traced
through its computation:

.. math::
    \mathrm{Simple}(x)_i = \bigoplus_{j \in \mathcal{N}(i)} w_{j,i}\, x_j
    \quad (\oplus \in \{\mathrm{sum}, \mathrm{mean}, \mathrm{max}, \mathrm{min}, \mathrm{mul}\}),

optionally plus :math:`x_i` (``combine_root="sum"``), concatenated after it (``"cat"``), or
with a self loop on every node (``"self_loop"``). Each output channel is its input channel's
aggregate, so written as ``index_select`` of the sources and ``torch_geometric.utils.scatter``
onto the targets it keeps its input's channels, which the layers around it cut. Other
aggregations (a list, an ``Aggregation`` module) or flows are called as one op and keep
their channels.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch_geometric import utils
from torch_geometric.nn import SimpleConv

from .api import LEAF, Connecting, ModuleRule, TraceError, Tracing, Unsupported, trace_through
from .registry import REGISTRY

_REDUCTIONS = ("sum", "add", "mean", "min", "max", "mul")


def _simple(conv, x, edge_index, edge_weight=None, size=None):
    """``SimpleConv.forward`` over one node set, with traceable ops (the trace is checked
    against the model's output, so a sparse adjacency that indexes otherwise is caught)."""
    if isinstance(x, tuple) or size is not None:
        raise TraceError(
            "SimpleConv called on a (source, target) pair or with size=: lumos_fx writes it out only over one "
            "node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")
    if conv.combine_root == "self_loop":
        edge_index, edge_weight = utils.add_self_loops(edge_index, edge_weight, num_nodes=x.size(0))
    messages = x.index_select(0, edge_index[0])
    if edge_weight is not None:
        messages = edge_weight.view(-1, 1) * messages
    # Through the module attribute: fx patches the functions it records as one op in PyG's
    # namespaces, not in this module's globals.
    out = utils.scatter(messages, edge_index[1], 0, dim_size=x.size(0), reduce=conv.aggr)
    if conv.combine_root == "sum":
        return out + x
    if conv.combine_root == "cat":
        return torch.cat([x, out], dim=-1)
    return out


class SimpleConvRule(ModuleRule):
    def tracing(self, module: nn.Module) -> Tracing:
        if module.aggr not in _REDUCTIONS or module.flow != "source_to_target":
            return LEAF
        return trace_through(_simple)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported(f"written out only with aggr in {_REDUCTIONS} and flow='source_to_target'; called as "
                          "one op, its channels are kept")


REGISTRY.register(SimpleConvRule(), SimpleConv)
