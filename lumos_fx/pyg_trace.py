"""How fx traces torch_geometric models: what the tracer needs beyond the rules.

Plain ``torch.fx`` cannot trace a ``MessagePassing`` layer (``propagate()`` inspects its
``edge_index``) nor PyG's pooling (its output size, the number of graphs, is read off the
``batch`` values). When the user's code has imported torch_geometric, the PyG rules are
registered (:func:`register_rules`): they make ``MessagePassing`` layers, PyG's ``Linear``
and its per-graph norms one op each (:mod:`lumos_fx.rules.graph_conv`,
:mod:`lumos_fx.rules.graph_norm`), write GIN, GINE (:mod:`lumos_fx.rules.graph_gin`),
EdgeConv (:mod:`lumos_fx.rules.graph_edge_conv`), PNAConv (:mod:`lumos_fx.rules.graph_pna`), SimpleConv
(:mod:`lumos_fx.rules.graph_simple_conv`), AttentiveFP's GATEConv (:mod:`lumos_fx.rules.graph_gate_conv`),
AttentionalAggregation (:mod:`lumos_fx.rules.graph_attentional_aggregation`), PointNetConv
(:mod:`lumos_fx.rules.graph_point_net`), GENConv (:mod:`lumos_fx.rules.graph_gen_conv`), SchNet's CFConv
(:mod:`lumos_fx.rules.graph_schnet`)
out, and record PyG's functional ops as one op each (:mod:`lumos_fx.rules.graph_ops`), in whatever
form the model calls them (``from torch_geometric.nn import global_mean_pool`` or
``torch_geometric.nn.global_mean_pool``: :func:`namespaces`).
"""

from __future__ import annotations

import sys

from torch import nn

from .errors import InputError


def loaded() -> bool:
    """True when torch_geometric is in use (imported by the user's code)."""
    return "torch_geometric" in sys.modules


def namespaces() -> tuple:
    """Python modules through which models reach those functions by attribute."""
    if not loaded():
        return ()
    import torch_geometric.nn
    import torch_geometric.nn.pool
    import torch_geometric.utils

    return (torch_geometric.nn, torch_geometric.nn.pool, torch_geometric.utils)


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
    from .rules import graph_attention, graph_conv, graph_edge_conv, graph_gin, graph_norm  # noqa: F401
    from .rules import graph_ops, graph_pna, graph_simple_conv  # noqa: F401
    from .rules import graph_attentional_aggregation, graph_gate_conv, graph_transformer_conv  # noqa: F401
    from .rules import graph_gen_conv, graph_point_net, graph_schnet  # noqa: F401


