"""Normalisation layers that keep channels apart: BatchNorm (module and functional), InstanceNorm, GroupNorm."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .api import Connecting, ModuleRule, Outcome, Pruning, Rule, Unsupported, arg, const
from .registry import REGISTRY

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def channel_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The module's parameters and buffers with one entry per channel (not counters)."""
    tensors = [t for _, t in module.named_parameters(recurse=False)] + [t for _, t in module.named_buffers(recurse=False)]
    return [t for t in tensors if t is not None and t.dim() == 1]


class ChannelNorm(ModuleRule):
    r"""BatchNorm and InstanceNorm:

    .. math::
        y_c = \frac{x_c - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}\,\gamma_c + \beta_c,

    with statistics of channel ``c`` alone (over the batch, or over one sample's positions).
    Its channels are its input's, sliced with the layer that produces them; ``\gamma, \beta``
    and the running statistics are sliced with them. It is not a consumer: a gate in front
    of it would be normalised away, so the gate sits after it, at the next layer's input.
    """

    channels_at = 1

    def __init__(self, spatial: int | None = None) -> None:
        self.spatial = spatial  # InstanceNorm{k}d: the k dims after the channels; they may come unbatched

    def channel_dim(self, module: nn.Module, ndim: int) -> int:
        return 1 if self.spatial is None else ndim - self.spatial - 1  # (C, L) unbatched or (N, C, L)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        if src.dim != self.channel_dim(module, len(an.shape(x))):
            raise Unsupported(f"normalises per index of a dim other than the channels (dim {src.dim})")
        out = an.follow(node, src, src.dim)
        for tensor in channel_tensors(module):
            an.tie(out, an.param_space(tensor, 0))

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        module = pc.module(node)
        if pc.is_const(x) and isinstance(module, _BATCH_NORMS):
            if module.track_running_stats:
                return const(pc.evaluate(node))  # a per-channel affine map in eval mode
            # Batch statistics of a value constant over the batch: x - mu = 0.
            beta = module.bias if module.affine else torch.zeros(pc.space(node).size, device=pc.const(x).device)
            return const(pc.broadcast_form(node, beta.detach()))
        if pc.is_const(x):
            return const(pc.evaluate_at_example(node))
        self.set_width(module, pc.n_kept(pc.space(node)))
        return super().prune(node, pc)

    def set_width(self, module: nn.Module, n: int) -> None:
        module.num_features = n


class GroupNormRule(ChannelNorm):
    r"""``nn.GroupNorm(G, C)``: statistics over each group of ``C/G`` consecutive channels,

    .. math::
        y_c = \frac{x_c - \mu_{g(c)}}{\sqrt{\sigma_{g(c)}^2 + \epsilon}}\,\gamma_c + \beta_c .

    Removing one channel would change its norm group's statistics, so the channels of a
    norm group are tied into one unit: they go together, and ``num_groups`` shrinks.
    """

    def connect(self, node: fx.Node, an: Connecting) -> None:
        super().connect(node, an)
        src, out = an.space(node.args[0]), an.space(node)
        if src is not None:
            module = an.module(node)
            per_group = module.num_channels // module.num_groups
            c = np.arange(module.num_channels)
            an.tie(src, out, c, (c // per_group) * per_group)

    def set_width(self, module: nn.GroupNorm, n: int) -> None:
        per_group = module.num_channels // module.num_groups
        module.num_channels, module.num_groups = n, n // per_group


class FunctionalBatchNorm(Rule):
    r"""``F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)``, a
    BatchNorm written out in Python (timm's ``BatchNormAct2d``): the map of
    :class:`ChannelNorm` on dim 1,

    .. math::
        y_c = \frac{x_c - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}\,\gamma_c + \beta_c ;

    the statistics and :math:`\gamma, \beta` it reads are sliced with the channels."""

    channels_at = 1
    _PER_CHANNEL = ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))

    def connect(self, node: fx.Node, an: Connecting) -> None:
        src = an.space(node.args[0])
        if src is None:
            return
        if src.dim != 1:
            raise Unsupported(f"normalises per index of dim 1, the channels are on dim {src.dim}")
        out = an.follow(node, src, 1)
        for index, name in self._PER_CHANNEL:
            space = an.space(arg(node, index, name))
            if space is not None:
                an.tie(out, space)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        if pc.is_const(node.args[0]):
            if arg(node, 1, "running_mean") is not None:
                return const(pc.evaluate(node))  # a per-channel affine map with running statistics
            return const(pc.evaluate_at_example(node))
        return super().prune(node, pc)


REGISTRY.register(FunctionalBatchNorm(), F.batch_norm)
REGISTRY.register(ChannelNorm(), *_BATCH_NORMS)
for _spatial, _norm in enumerate(_INSTANCE_NORMS, start=1):
    REGISTRY.register(ChannelNorm(_spatial), _norm)
REGISTRY.register(GroupNormRule(), nn.GroupNorm)


class Couples(Rule):
    """An op that mixes all channels in a way no rule here describes yet (LayerNorm's
    statistics over the channels, a normalisation). Its channels are kept, with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported(self.reason)


class CouplesModule(Couples, ModuleRule):
    pass


_NORMALISES = "normalises over the channels, which couples them (lumos_fx keeps them)"
REGISTRY.register(CouplesModule(f"LayerNorm {_NORMALISES}"), nn.LayerNorm, nn.RMSNorm)
REGISTRY.register(Couples(f"layer_norm {_NORMALISES}"), F.layer_norm, F.normalize)
