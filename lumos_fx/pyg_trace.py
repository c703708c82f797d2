r"""How fx traces torch_geometric models.

Plain ``torch.fx`` cannot trace a ``MessagePassing`` layer (``propagate()`` inspects its
``edge_index``) nor PyG's pooling (its output size, the number of graphs, is read off the
``batch`` values). So, when the user's code has imported torch_geometric:

- ``MessagePassing`` layers (and PyG's ``Linear``) are leaves: one ``call_module`` node each, cut by their rule
  (:mod:`lumos_fx.rules.graph_conv`) or kept whole when they have none;
- PyG's functional ops (:data:`FUNCTIONS`: global pooling, ``scatter``, ``softmax``,
  ``to_dense_batch``, ``degree``) are auto-wrapped: one ``call_function`` node each, in
  whatever form the model calls them (``from torch_geometric.nn import global_mean_pool``
  or ``torch_geometric.nn.global_mean_pool``);
- ``GINConv`` and ``GINEConv`` are traced through their computation, so that their inner
  ``nn`` reaches the ordinary layer rules:

.. math::
    \mathrm{GIN}(x)_i = h_\Theta\Big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)} x_j\Big),
    \qquad
    \mathrm{GINE}(x, e)_i = h_\Theta\Big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)}
    \operatorname{ReLU}(x_j + W_e e_{j,i} + b_e)\Big)

written as ``index_select`` of the sources, ``torch_geometric.utils.scatter`` (sum) onto the
targets and element-wise ops: the edge embedding :math:`W_e e + b_e` is added channel by
channel to :math:`x_j`, so its output channels join the node group (Lumos eq. 9).
"""

from __future__ import annotations

import sys

from torch import nn

from .errors import InputError, TraceError


def loaded() -> bool:
    """True when torch_geometric is in use (imported by the user's code)."""
    return "torch_geometric" in sys.modules


def is_leaf(module: nn.Module) -> bool:
    """``MessagePassing`` layers, ``torch_geometric.nn.Linear`` (its rule is nn.Linear's;
    traced into, it would be a bare ``F.linear`` on attributes) and the normalisations that
    take statistics per graph (they read the number of graphs off ``batch``). PyG's
    ``BatchNorm`` is traced through to the ``BatchNorm1d`` it wraps."""
    if not loaded():
        return False
    from torch_geometric.nn import BatchNorm, Linear, MessagePassing, norm

    per_graph = tuple(getattr(norm, name) for name in norm.__all__ if getattr(norm, name) is not BatchNorm)
    return isinstance(module, (MessagePassing, Linear, *per_graph))


def functions() -> tuple:
    """PyG functions fx records as one op (see :data:`FUNCTIONS`)."""
    if not loaded():
        return ()
    from torch_geometric import utils
    from torch_geometric.nn import pool

    return (pool.global_add_pool, pool.global_mean_pool, pool.global_max_pool, utils.scatter, utils.softmax,
            utils.to_dense_batch, utils.degree)


def namespaces() -> tuple:
    """Python modules through which models reach those functions by attribute."""
    if not loaded():
        return ()
    import torch_geometric.nn
    import torch_geometric.nn.pool
    import torch_geometric.utils

    return (torch_geometric.nn, torch_geometric.nn.pool, torch_geometric.utils)


def traced_through(module: nn.Module):
    """The function fx enters `module` through, for GIN layers it can write out; else None."""
    if not loaded():
        return None
    from torch_geometric.nn import GINConv, GINEConv

    if type(module) not in (GINConv, GINEConv) or module.aggr != "add" or module.flow != "source_to_target":
        return None
    return _gin if type(module) is GINConv else _gine


def reject_data(value, name: str, model: nn.Module) -> None:
    """A ``Data``/``Batch`` argument would be traced as a constant (the example graph baked
    into the model): say how to pass its tensors instead."""
    if not loaded():
        return
    from torch_geometric.data.data import BaseData

    if isinstance(value, BaseData):
        keys = [k for k in ("x", "edge_index", "edge_attr", "batch") if getattr(value, k, None) is not None]
        raise InputError(
            f"argument '{name}' of {type(model).__name__}.forward is a torch_geometric {type(value).__name__}; "
            "lumos_fx traces tensors, and would bake this graph into the model.\n"
            f"fix: give forward one argument per tensor, forward({', '.join(keys)}), and call "
            f"lumos_fx.instrument(model, example_inputs=({', '.join('data.' + k for k in keys)})); "
            f"then call the model as model({', '.join('data.' + k for k in keys)}).")


def register_rules() -> None:
    """Register the rules for PyG layers and ops (imports torch_geometric's classes)."""
    from .rules import graph_attention, graph_conv, graph_norm, graph_ops  # noqa: F401  (registration)


def _plain_call(conv, x, size) -> None:
    if isinstance(x, tuple) or size is not None:
        raise TraceError(
            f"{type(conv).__name__} called on a (source, target) pair or with size=: lumos_fx writes out "
            "only GIN layers over one node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")


def _neighbour_sum(messages, edge_index, n):
    from torch_geometric.utils import scatter

    return scatter(messages, edge_index[1], 0, dim_size=n, reduce="sum")


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
