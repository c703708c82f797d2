r"""torch_geometric message-passing layers that are linear in their node features.

Each is called by fx as one op (a leaf) and computes, with :math:`A_k` fixed by the graph
(normalised adjacency, neighbour mean or sum, identity for the root term),

.. math::
    y = \sum_k A_k\, x\, W_k^\top + b .

- ``GCNConv``: :math:`y = \hat D^{-1/2} \hat A \hat D^{-1/2} x W^\top + b` (Lumos eq. 10);
- ``GraphConv``: :math:`y = \mathrm{aggr}_{j \in \mathcal N(i)}(x_j) W_{rel}^\top + b + x_i W_{root}^\top`;
- ``SAGEConv``: :math:`y = \mathrm{aggr}_{j \in \mathcal N(i)}(x_j) W_l^\top + b + x_i W_r^\top`;
- ``SGConv``: :math:`y = \hat A^K x W^\top + b`; ``TAGConv``: :math:`y = \sum_{k=0}^K \hat A^k x W_k^\top + b`;
- ``ChebConv``: :math:`y = \sum_{k<K} T_k(\hat L)\, x W_k^\top + b` (Chebyshev polynomials of the scaled Laplacian).

A gate on the input channels commutes with the graph operators (sum, mean, and with
:math:`z \ge 0` also max and min act channel by channel), so it folds exactly into the
columns of every :math:`W_k`: the layer is a consumer. Its output channels are rows of
every :math:`W_k` and of :math:`b`: a producer. With every input channel closed the
layer computes :math:`b`. ``SAGEConv(normalize=True)`` divides by the norm over all output
channels, so its outputs are kept whole; ``project=True`` and learnable aggregations
(LSTM, attention) are refused.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch_geometric.nn import ChebConv, GCNConv, GraphConv, MessagePassing, SAGEConv, SGConv, TAGConv
from torch_geometric.nn.dense.linear import Linear as PygLinear

from .api import Connecting, ModuleRule, Outcome, Pruning, Unsupported, arg, const
from .linear import LinearRule, consume_channels
from .registry import REGISTRY

_CHANNELWISE_AGGR = frozenset({"add", "sum", "mean", "max", "min"})


class LinearInFeatures(ModuleRule):
    """A layer ``y = sum_k A_k x W_k^T + b``; subclasses name the ``W_k`` and ``b``."""

    channels_at = -1

    def weights(self, module: nn.Module) -> list[torch.Tensor]:
        raise NotImplementedError

    def bias(self, module: nn.Module) -> torch.Tensor | None:
        raise NotImplementedError

    def check(self, module: nn.Module) -> None:
        """Raise Unsupported when this configuration of the layer is not linear in x."""

    def outputs_whole(self, module: nn.Module) -> str | None:
        """Why the output channels cannot be cut, or None."""
        return None

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        self.check(module)
        x = arg(node, 0, "x")
        if not isinstance(x, fx.Node):
            raise Unsupported("takes a (source, target) pair of node features")
        out = an.new_space(node, -1, producer=True)
        for w in self.weights(module):
            an.tie(out, an.param_space(w, 0))
        if self.bias(module) is not None:
            an.tie(out, an.param_space(self.bias(module), 0))
        whole = self.outputs_whole(module)
        if whole is not None:
            an.block(out, f"{an.describe(node)}: {whole}")
        consume_channels(node, x, [an.param_space(w, 1) for w in self.weights(module)], an)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        module = pc.module(node)
        if pc.is_empty(arg(node, 0, "x")):
            bias = self.bias(module)
            if bias is None:
                bias = self.weights(module)[0].new_zeros(pc.space(node).size)
            return const(pc.broadcast_form(node, self.closed_output(module, bias.detach())))
        return pc.materialize_dead_inputs(node)

    def closed_output(self, module: nn.Module, bias: torch.Tensor) -> torch.Tensor:
        """What the layer computes for zero-width input: its bias."""
        return bias

    def resize(self, module: nn.Module) -> None:
        module.out_channels, module.in_channels = self.weights(module)[0].shape
        resize_linears(module)


def resize_linears(module: nn.Module) -> None:
    """Set the sizes of `module`'s ``torch_geometric.nn.Linear`` children from their weights."""
    for lin in module.modules():
        if isinstance(lin, PygLinear):
            lin.out_channels, lin.in_channels = lin.weight.shape


class GCNRule(LinearInFeatures):
    def weights(self, module: GCNConv):
        return [module.lin.weight]

    def bias(self, module: GCNConv):
        return module.bias

    def source(self, m: GCNConv) -> str:
        return (f"torch_geometric.nn.GCNConv({m.in_channels}, {m.out_channels}, improved={m.improved}, "
                f"cached={m.cached}, add_self_loops={m.add_self_loops}, normalize={m.normalize}, "
                f"bias={m.bias is not None})")


class GraphConvRule(LinearInFeatures):
    def check(self, module: GraphConv) -> None:
        if module.aggr not in _CHANNELWISE_AGGR:
            raise Unsupported(f"aggregates with {module.aggr!r}, which mixes channels")

    def weights(self, module: GraphConv):
        return [module.lin_rel.weight, module.lin_root.weight]

    def bias(self, module: GraphConv):
        return module.lin_rel.bias

    def source(self, m: GraphConv) -> str:
        return (f"torch_geometric.nn.GraphConv({m.in_channels}, {m.out_channels}, aggr={m.aggr!r}, "
                f"bias={m.lin_rel.bias is not None})")


class SAGERule(LinearInFeatures):
    def check(self, module: SAGEConv) -> None:
        if not isinstance(module.aggr, str) or module.aggr not in _CHANNELWISE_AGGR:
            raise Unsupported(f"aggregates with {module.aggr!r}, which mixes channels")
        if module.project:
            raise Unsupported("projects its input (project=True) before aggregating")

    def weights(self, module: SAGEConv):
        return [module.lin_l.weight] + ([module.lin_r.weight] if module.root_weight else [])

    def bias(self, module: SAGEConv):
        return module.lin_l.bias

    def outputs_whole(self, module: SAGEConv) -> str | None:
        return "normalize=True divides by the norm over all output channels" if module.normalize else None

    def closed_output(self, module: SAGEConv, bias: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(bias, dim=-1) if module.normalize else bias

    def source(self, m: SAGEConv) -> str:
        return (f"torch_geometric.nn.SAGEConv({m.in_channels}, {m.out_channels}, aggr={m.aggr!r}, "
                f"normalize={m.normalize}, root_weight={m.root_weight}, bias={m.lin_l.bias is not None})")


class SGRule(GCNRule):
    def bias(self, module: SGConv):
        return module.lin.bias

    def source(self, m: SGConv) -> str:
        return (f"torch_geometric.nn.SGConv({m.in_channels}, {m.out_channels}, K={m.K}, cached={m.cached}, "
                f"add_self_loops={m.add_self_loops}, bias={m.lin.bias is not None})")


class PolynomialRule(LinearInFeatures):
    """``TAGConv`` and ``ChebConv``: one weight per power (or polynomial) of the graph operator."""

    def weights(self, module: TAGConv | ChebConv):
        return [lin.weight for lin in module.lins]

    def bias(self, module: TAGConv | ChebConv):
        return module.bias

    def source(self, m: TAGConv | ChebConv) -> str:
        if isinstance(m, TAGConv):
            return (f"torch_geometric.nn.TAGConv({m.in_channels}, {m.out_channels}, K={m.K}, "
                    f"bias={m.bias is not None}, normalize={m.normalize})")
        return (f"torch_geometric.nn.ChebConv({m.in_channels}, {m.out_channels}, K={len(m.lins)}, "
                f"normalization={m.normalization!r}, bias={m.bias is not None})")


class PygLinearRule(LinearRule):
    """``torch_geometric.nn.Linear``: ``nn.Linear`` with its sizes named ``in_channels`` and
    ``out_channels`` (GINEConv's edge encoder)."""

    def resize(self, module: PygLinear) -> None:
        module.out_channels, module.in_channels = module.weight.shape

    def source(self, module: PygLinear) -> str:
        return f"torch_geometric.nn.Linear({module.in_channels}, {module.out_channels}, bias={module.bias is not None})"


REGISTRY.register(GCNRule(), GCNConv)
REGISTRY.register(GraphConvRule(), GraphConv)
REGISTRY.register(SAGERule(), SAGEConv)
REGISTRY.register(SGRule(), SGConv)
REGISTRY.register(PolynomialRule(), TAGConv, ChebConv)
REGISTRY.register(PygLinearRule(), PygLinear)
# fx cannot trace propagate() (it inspects edge_index): every message-passing layer is one op,
# cut by its rule or kept whole. PyG's Linear too: traced into, it is a bare F.linear on attributes.
REGISTRY.register_family(ModuleRule(), MessagePassing, PygLinear)
