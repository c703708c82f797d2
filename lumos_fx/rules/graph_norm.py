r"""torch_geometric's normalisation layers, which take statistics over each graph's nodes.

``GraphNorm``, ``InstanceNorm`` and ``MeanSubtractionNorm`` normalise every channel
:math:`c` of the nodes of graph :math:`g` by statistics of that channel alone,

.. math::
    y_{ic} = \gamma_c\, \frac{x_{ic} - \alpha_c\, \mu_{gc}}{\sqrt{\sigma^2_{gc} + \epsilon}} + \beta_c,
    \qquad \mu_{gc} = \frac{1}{|g|} \sum_{i \in g} x_{ic},

(``InstanceNorm``: :math:`\alpha = 1`; ``MeanSubtractionNorm``: :math:`y = x - \mu`), so they
are channel norms like BatchNorm: their channels are their input's, sliced with its
producer, with :math:`\gamma, \beta, \alpha` and any running statistics. An input channel
that is constant over the nodes has the same statistics in every graph, so its output is
the layer's value on one node, whatever the graph.

``LayerNorm`` normalises over every channel of a node (``mode="node"``) or of a whole graph
(``mode="graph"``), ``PairNorm`` and ``DiffGroupNorm`` mix channels too: their channels are kept.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch_geometric.nn import norm

from .api import ModuleRule, Outcome, Pruning, arg, const
from .norm import ChannelNorm, CouplesModule
from .registry import REGISTRY

_SOURCES = {
    norm.GraphNorm: lambda m: f"GraphNorm({m.in_channels}, eps={m.eps})",
    norm.InstanceNorm: lambda m: (f"InstanceNorm({m.num_features}, eps={m.eps}, momentum={m.momentum}, "
                                  f"affine={m.affine}, track_running_stats={m.track_running_stats})"),
    norm.MeanSubtractionNorm: lambda m: "MeanSubtractionNorm()",
    norm.LayerNorm: lambda m: f"LayerNorm({m.in_channels}, eps={m.eps}, affine={m.affine}, mode={m.mode!r})",
    norm.PairNorm: lambda m: f"PairNorm(scale={m.scale}, scale_individually={m.scale_individually}, eps={m.eps})",
    norm.DiffGroupNorm: lambda m: (f"DiffGroupNorm({m.in_channels}, {m.groups}, lamda={m.lamda}, eps={m.norm.eps}, "
                                   f"momentum={m.norm.momentum}, track_running_stats={m.norm.track_running_stats})"),
}


class PygNormSource:
    def source(self, module: nn.Module) -> str:
        return "torch_geometric.nn." + _SOURCES[type(module)](module)


class GraphChannelNorm(PygNormSource, ChannelNorm):
    channels_at = -1

    def channel_dim(self, module: nn.Module, ndim: int) -> int:
        return ndim - 1

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = arg(node, 0, "x")
        module = pc.module(node)
        if pc.is_const(x) and pc.is_uniform(x):
            one_node = pc.const(x).reshape(1, -1)
            with torch.no_grad():
                value = module(one_node, torch.zeros(1, dtype=torch.long, device=one_node.device))
            return const(pc.broadcast_form(node, value.reshape(-1)))
        # A constant that varies over nodes is fed to the layer at its runtime shape.
        self.set_width(module, pc.n_kept(pc.space(node)))
        return pc.materialize_dead_inputs(node)

    def set_width(self, module: nn.Module, n: int) -> None:
        if isinstance(module, norm.InstanceNorm):
            module.num_features = n
        elif isinstance(module, norm.GraphNorm):
            module.in_channels = n


class CouplesNorm(PygNormSource, CouplesModule):
    pass


_COUPLES = "normalises over the channels, which couples them (lumos_fx keeps them)"
# Norms that take statistics per graph read the number of graphs off `batch`: one op each.
# PyG's BatchNorm is traced through to the BatchNorm1d it wraps.
REGISTRY.register_family(ModuleRule(), *(getattr(norm, name) for name in norm.__all__
                                         if getattr(norm, name) is not norm.BatchNorm))
REGISTRY.register(GraphChannelNorm(), norm.GraphNorm, norm.InstanceNorm, norm.MeanSubtractionNorm)
REGISTRY.register(CouplesNorm(f"torch_geometric LayerNorm {_COUPLES}"), norm.LayerNorm)
REGISTRY.register(CouplesNorm(f"PairNorm {_COUPLES}"), norm.PairNorm)
REGISTRY.register(CouplesNorm("DiffGroupNorm assigns nodes to clusters from all their channels (lumos_fx keeps "
                                "them)"), norm.DiffGroupNorm)
