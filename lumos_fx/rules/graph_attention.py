r"""torch_geometric's graph attention layers, ``GATConv`` and ``GATv2Conv``, cut by heads.

With :math:`H` heads of :math:`C` channels, projections :math:`W` (rows grouped by head) and
attention vectors :math:`a_h`, head :math:`h` of node :math:`i` computes

.. math::
    x'_{j} = W x_j, \qquad
    \alpha^h_{ij} = \operatorname{softmax}_{j \in \mathcal N(i) \cup \{i\}} e^h_{ij}, \qquad
    y^h_i = \sum_j \alpha^h_{ij}\, x'^h_{j},

with :math:`e^h_{ij} = \mathrm{LeakyReLU}(a_{h,src}^\top x'^h_j + a_{h,dst}^\top x'^h_i +
a_{h,edge}^\top W_e\, \mathrm{edge}_{ij})` for ``GATConv`` and
:math:`e^h_{ij} = a_h^\top \mathrm{LeakyReLU}(W_l x_j + W_r x_i + W_e\, \mathrm{edge}_{ij})^h` for
``GATv2Conv``. Then ``concat=True`` lays the heads side by side, :math:`y_i = [y^1_i \| \dots
\| y^H_i] + b`, and ``concat=False`` averages them, :math:`y_i = \frac1H \sum_h y^h_i + b`.

- Input channels: :math:`W` (every projection of x, and the residual's) is linear in
  :math:`x`, so a gate on x folds into its columns; a gate on the edge features folds into
  :math:`W_e`'s columns (``fill_value`` means and sums of self-loop features are taken channel by
  channel). An edge group closed altogether leaves the layer without ``edge_attr`` (its
  term was 0).
- Output channels, ``concat=True``: every channel of a head enters that head's scores
  :math:`e^h`, so the unit is the head. Closing head :math:`h` removes its rows of every
  :math:`W`, its :math:`a_h` and its slice of :math:`b`; the other heads' scores and outputs do
  not read it. ``concat=False`` sums over heads inside each output channel: kept whole.
- Every input channel closed: ``GATConv`` projects to :math:`x' = 0` (no bias), so
  :math:`y = b`; ``GATv2Conv`` projects to its bias :math:`b_l` and, since the
  :math:`\alpha^h_{ij}` of each node sum to 1 over its (self-looped, so never empty)
  neighbourhood, computes :math:`b_l + b`. Without self loops a node with no incoming edge gets
  :math:`b` alone, so the layer is kept and fed a zero-width input.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx, nn
from torch_geometric.nn import GATConv, GATv2Conv

from .api import Connecting, ModuleRule, Outcome, Pruning, Space, Unsupported, arg, const, set_arg
from .graph_conv import resize_linears
from .linear import consume_channels
from .registry import REGISTRY


class GraphAttentionRule(ModuleRule):
    """Subclasses name the projections of x, the attention vectors and the closed-input output."""

    channels_at = -1

    def projections(self, module: nn.Module) -> list[nn.Module]:
        """The Linear layers that read x (deduplicated), residual included."""
        raise NotImplementedError

    def attentions(self, module: nn.Module) -> list[torch.Tensor]:
        """The attention vectors, shaped (1, H, C), the edge term's included."""
        raise NotImplementedError

    def closed_output(self, module: nn.Module) -> torch.Tensor | None:
        """The output (one value per channel) when every input channel is closed, or None
        when it is not constant."""
        raise NotImplementedError

    def output_bias(self, module: nn.Module) -> torch.Tensor | None:
        """The bias added after the heads are laid side by side."""
        return module.bias

    def outputs_whole(self, module: nn.Module) -> str | None:
        """Why the output channels cannot be cut by heads, or None."""
        return None if module.concat else "concat=False averages the heads inside every output channel"

    def tie_heads(self, out: Space, module: nn.Module, an: Connecting) -> None:
        """Make each head's channels one unit: head h owns the entry h of every attention vector."""
        head_of = np.repeat(np.arange(module.heads), module.out_channels)
        for att in self.attentions(module):
            an.tie(out, an.param_space(att, 1), np.arange(head_of.size), head_of)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        x = arg(node, 0, "x")
        if not isinstance(x, fx.Node):
            raise Unsupported("takes a (source, target) pair of node features")
        if arg(node, 3, "size") is not None or arg(node, 4, "return_attention_weights") is not None:
            raise Unsupported("is called with size= or return_attention_weights=")
        out = an.new_space(node, -1, producer=True)
        whole = self.outputs_whole(module)
        if whole is None:
            self.tie_heads(out, module, an)
            lins = self.projections(module) + ([module.lin_edge] if module.lin_edge is not None else [])
            rows = [t for lin in lins for t in (lin.weight, lin.bias)] + [self.output_bias(module)]
            for tensor in rows:
                if tensor is not None:
                    an.tie(out, an.param_space(tensor, 0))
        else:
            an.block(out, f"{an.describe(node)}: {whole}")
        consume_channels(node, x, [an.param_space(lin.weight, 1) for lin in self.projections(module)], an)
        edge = arg(node, 2, "edge_attr")
        if isinstance(edge, fx.Node) and module.lin_edge is not None:
            consume_channels(node, edge, [an.param_space(module.lin_edge.weight, 1)], an)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        module = pc.module(node)
        edge = arg(node, 2, "edge_attr")
        if isinstance(edge, fx.Node) and pc.is_empty(edge):
            set_arg(node, 2, "edge_attr", None)
        x = arg(node, 0, "x")
        if pc.is_empty(x):
            value = self.closed_output(module)
            if value is not None:
                return const(pc.broadcast_form(node, value.detach()))
            ref = pc.reference(x, [0], node)
            n = pc.insert(node, "call_method", "size", (ref, 0))
            set_arg(node, 0, "x", pc.insert(node, "call_method", "new_zeros", (ref, (n, 0))))
        return pc.materialize_dead_inputs(node)

    def resize(self, module: nn.Module) -> None:
        module.heads = self.projections(module)[0].weight.shape[0] // module.out_channels
        module.in_channels = self.projections(module)[0].weight.shape[1]
        if module.lin_edge is not None and module.lin_edge.weight.shape[1] == 0:
            module.lin_edge, module.edge_dim = None, None
            if hasattr(module, "att_edge"):
                module.att_edge = None
        elif module.lin_edge is not None:
            module.edge_dim = module.lin_edge.weight.shape[1]
        resize_linears(module)

    def _common_source(self, m: nn.Module) -> str:
        return (f"{m.in_channels}, {m.out_channels}, heads={m.heads}, concat={m.concat}, "
                f"negative_slope={m.negative_slope}, dropout={m.dropout}, add_self_loops={m.add_self_loops}, "
                f"edge_dim={m.edge_dim}, fill_value={m.fill_value!r}, bias={m.bias is not None}, "
                f"residual={m.residual}")


class GATRule(GraphAttentionRule):
    def projections(self, module: GATConv):
        if module.lin is None:
            raise Unsupported("has separate source and target projections (in_channels given as a pair)")
        return [module.lin] + ([module.res] if module.res is not None else [])

    def attentions(self, module: GATConv):
        return [module.att_src, module.att_dst] + ([module.att_edge] if module.att_edge is not None else [])

    def closed_output(self, module: GATConv):
        bias = module.bias
        return bias if bias is not None else module.att_src.new_zeros(
            module.heads * module.out_channels if module.concat else module.out_channels)

    def source(self, m: GATConv) -> str:
        return f"torch_geometric.nn.GATConv({self._common_source(m)})"


class GATv2Rule(GraphAttentionRule):
    def projections(self, module: GATv2Conv):
        lins = [module.lin_l] + ([] if module.share_weights else [module.lin_r])
        return lins + ([module.res] if module.res is not None else [])

    def attentions(self, module: GATv2Conv):
        return [module.att]

    def closed_output(self, module: GATv2Conv):
        if module.lin_l.bias is not None and not module.add_self_loops:
            return None
        heads, per_head = module.heads, module.out_channels
        value = module.lin_l.bias if module.lin_l.bias is not None else module.att.new_zeros(heads * per_head)
        if not module.concat:
            value = value.reshape(heads, per_head).mean(0)
        return value + module.bias if module.bias is not None else value

    def source(self, m: GATv2Conv) -> str:
        return f"torch_geometric.nn.GATv2Conv({self._common_source(m)}, share_weights={m.share_weights})"


REGISTRY.register(GATRule(), GATConv)
REGISTRY.register(GATv2Rule(), GATv2Conv)
