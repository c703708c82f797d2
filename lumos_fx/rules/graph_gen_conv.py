r"""``GENConv`` (DeeperGCN), traced through its computation, so that its MLP reaches the
ordinary layer rules:

.. math::
    \mathbf{x}_i^{\prime} = \mathrm{MLP} \Big( W_d\, \mathbf{x}_i + \mathrm{AGG} \big( \{
    \mathrm{ReLU} ( W_s \mathbf{x}_j + W_e \mathbf{e}_{ji} ) + \epsilon : j \in \mathcal{N}(i) \} \big) \Big),

with ``lin_src`` (:math:`W_s`), ``lin_edge`` (:math:`W_e`) and ``lin_dst`` (:math:`W_d`) there
only where the widths differ from ``out_channels``, and AGG the softmax aggregation

.. math::
    \mathrm{softmax}(\mathcal{M} \mid t)_c = \sum_{j} \frac{\exp(t\, m_{jc})}{\sum_{k}
    \exp(t\, m_{kc})}\, m_{jc}

or the power mean :math:`\big(\frac{1}{|\mathcal{N}(i)|} \sum_j m_{jc}^p\big)^{1/p}` (both with
:math:`t`, :math:`p` learnable or not; PyG clamps the power mean's terms), or sum, mean, max,
min. Every term is channel :math:`c` alone: the softmax runs over each target's edges for
each channel separately (``torch_geometric.utils.softmax``), and :math:`t` or :math:`p` is
one number. So message, aggregate and residual are written as ``index_select``, element-wise
ops, ``softmax`` and ``scatter``, the ``out_channels`` channels are one group with the rows of
``lin_src``, ``lin_edge``, ``lin_dst`` (or the node features and ``edge_attr`` themselves)
and the first columns of the MLP, and the MLP's hidden widths (its norm layers sliced
with them) are cut.

``MessageNorm`` (``msg_norm=True``), :math:`s\, \lVert \mathbf{x}_i \rVert_2\,
\mathbf{m}_i / \lVert \mathbf{m}_i \rVert_2`, divides every channel by a norm over all of
them: it is called as one op and keeps the ``out_channels`` group whole, with the reason
(the MLP's hidden widths are still cut). A learnable ``t`` or ``p`` per channel, other
aggregations (a list, an ``Aggregation`` module), bipartite calls and other flows are
called as one op and keep their channels.
"""

from __future__ import annotations

from torch import fx, nn
from torch_geometric import utils
from torch_geometric.nn import GENConv
from torch_geometric.nn.aggr import PowerMeanAggregation, SoftmaxAggregation
from torch_geometric.nn.norm import MessageNorm

from .api import LEAF, Connecting, ModuleRule, TraceError, Tracing, Unsupported, trace_through
from .graph_edge_conv import _REDUCES
from .registry import REGISTRY


def _softmax(aggr: SoftmaxAggregation, messages, index, n):
    """``SoftmaxAggregation`` over each target's edges; a semi-gradient one (``softmax_sg``)
    takes no gradient through the weights, as its ``torch.no_grad()`` block does."""
    alpha = utils.softmax(messages * aggr.t, index, None, n, 0)
    if aggr.semi_grad:
        alpha = alpha.detach()
    return utils.scatter(messages * alpha, index, 0, dim_size=n, reduce="sum")


def _power_mean(aggr: PowerMeanAggregation, messages, index, n):
    """``PowerMeanAggregation``: the mean of :math:`m^p` to the power :math:`1 / p`, both clamped,
    or, as PyG has it for the number :math:`p = 1`, the plain mean."""
    p = aggr.p
    if isinstance(p, (int, float)) and p == 1:
        return utils.scatter(messages, index, 0, dim_size=n, reduce="mean")
    clamp = dict(min=aggr.min_value, max=aggr.max_value)
    out = utils.scatter(messages.clamp(**clamp).pow(p), index, 0, dim_size=n, reduce="mean")
    # A learnable p's reciprocal as a method: the rule of `1.0 / p` gives its one element a
    # channel, which pow's rule would refuse as a second tensor argument.
    return out.clamp(**clamp).pow(1.0 / p if isinstance(p, (int, float)) else p.reciprocal())


def _why_one_op(conv: GENConv) -> str | None:
    aggr = conv.aggr_module
    if conv.flow != "source_to_target":
        return "flow='target_to_source'"
    if isinstance(aggr, (SoftmaxAggregation, PowerMeanAggregation)):
        if aggr.channels != 1:
            return f"a learnable {'t' if isinstance(aggr, SoftmaxAggregation) else 'p'} per channel"
        return None
    if isinstance(conv.aggr, str) and conv.aggr in _REDUCES:
        return None
    return f"aggregation {conv.aggr!r}"


class GENRule(ModuleRule):
    def tracing(self, module: GENConv) -> Tracing:
        return LEAF if _why_one_op(module) else trace_through(_gen)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported(f"written out only with aggr in softmax/powermean/sum/mean/max/min and "
                          f"flow='source_to_target'; with {_why_one_op(an.module(node))} it is called as one op, "
                          "its channels are kept")


class MessageNormRule(ModuleRule):
    """``MessageNorm``: one op; every output channel is divided by the norm of all of them."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("MessageNorm scales the aggregated messages by ||x_i|| / ||m_i||, norms over every "
                          "channel: a cut channel would change them, so the channels are kept")


def _aggregate(conv: GENConv, messages, index, n):
    aggr = conv.aggr_module
    if isinstance(aggr, SoftmaxAggregation):
        return _softmax(aggr, messages, index, n)
    if isinstance(aggr, PowerMeanAggregation):
        return _power_mean(aggr, messages, index, n)
    return utils.scatter(messages, index, 0, dim_size=n, reduce=_REDUCES[conv.aggr])


def _maybe(conv: nn.Module, name: str, x):
    """``conv.<name>(x)`` where GENConv has that projection (widths that differ), else ``x``."""
    return getattr(conv, name)(x) if hasattr(conv, name) else x


def _gen(conv, x, edge_index, edge_attr=None, size=None):
    """``GENConv.forward`` over one node set and a tensor ``edge_index``, with traceable ops."""
    if isinstance(x, tuple) or size is not None:
        raise TraceError(
            "GENConv called on a (source, target) pair or with size=: lumos_fx writes it out only over one "
            "node set.\n"
            "fix: name the layer in lumos_fx.Config(leaf_modules=[...]); its channels are then kept.")
    messages = _maybe(conv, "lin_src", x).index_select(0, edge_index[0])
    if edge_attr is not None:
        messages = messages + _maybe(conv, "lin_edge", edge_attr)
    messages = messages.relu() + conv.eps
    out = _aggregate(conv, messages, edge_index[1], x.size(0))
    if hasattr(conv, "msg_norm"):
        out = conv.msg_norm(x, out)
    return conv.mlp(out + _maybe(conv, "lin_dst", x))


REGISTRY.register(GENRule(), GENConv)
REGISTRY.register(MessageNormRule(), MessageNorm)
