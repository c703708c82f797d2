"""Ops that move dims or act along them, found by running them on meta tensors: permute,
transpose, reductions such as a spatial mean, and softmax / cumsum along a dim."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from .api import (Connecting, HeadRole, ModuleRule, Outcome, Pruning, Rule, Unsupported, arg, const, normalize_dim,
    run_on, shape_of, target_name)
from .registry import REGISTRY

PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


class Rearrange(Rule):
    """Ops that move dims or reduce some of them: permute, transpose, ``.T``, movedim, and
    sum / mean / amax / amin / prod / std / var / norm / logsumexp.

    Where the channel dim goes is found by running the op on a meta tensor whose dims all
    have different sizes. If it does not come out whole (it was reduced), the op mixes
    channels and is refused.
    """

    _MOVES = frozenset({"permute", "transpose", "swapaxes", "swapdims", "t", "movedim"})
    _SIZE_FREE = _MOVES | {"mean", "amax", "amin", "nanmean"}

    def head_role(self, node: fx.Node) -> HeadRole | None:
        return HeadRole.MOVE if target_name(node) in ("permute", "transpose") else None

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        ndim = len(an.shape(x))
        probe = run_on(node, torch.empty(PRIMES[:ndim], device="meta"))
        tag = PRIMES[src.dim]
        where = [i for i, s in enumerate(probe.shape) if s == tag] if isinstance(probe, torch.Tensor) else []
        if len(where) != 1:
            raise Unsupported("reduces or mixes the channel dim")
        an.follow(node, src, where[0])

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if not pc.is_const(x):
            return super().prune(node, pc)
        if target_name(node) in self._SIZE_FREE:
            return const(pc.evaluate(node))  # a mean or max of a constant is that constant at any size
        probe = run_on(node, torch.empty(PRIMES[: len(shape_of(x))], device="meta"))
        if PRIMES[0] in probe.shape:
            return const(pc.evaluate_at_example(node))  # exact at the example's sizes, the batch apart
        return super().prune(node, pc)  # a reduction over the batch: computed at run time


class AlongDim(Rule):
    """softmax / log_softmax / cumsum / cumprod along one dim: independent per channel when
    that dim is not the channel dim; across channels it couples them and is refused."""

    def _dim(self, node: fx.Node, an: Connecting) -> int:
        if node.op == "call_module":
            return an.module(node).dim
        return arg(node, 1, "dim")

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        dim = self._dim(node, an)
        if dim is None or normalize_dim(dim, len(an.shape(x))) == src.dim:
            raise Unsupported("normalises or accumulates across the channels")
        an.follow(node, src, src.dim)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        if pc.is_const(node.args[0]) and normalize_dim(self._dim(node, pc), len(shape_of(node))) != 0:
            return const(pc.evaluate_at_example(node))
        return super().prune(node, pc)


class AlongDimModule(AlongDim, ModuleRule):
    """``nn.Softmax(dim)``, ``nn.LogSoftmax(dim)``."""


REGISTRY.register(Rearrange(), "permute", "transpose", "swapaxes", "swapdims", "t", "movedim",
                  torch.permute, torch.transpose, torch.swapaxes, torch.t, torch.movedim,
                  "sum", "mean", "amax", "amin", "prod", "std", "var", "logsumexp", "norm", "nansum", "nanmean",
                  torch.sum, torch.mean, torch.amax, torch.amin, torch.prod, torch.std, torch.var,
                  torch.logsumexp, torch.norm, torch.nansum, torch.nanmean)
REGISTRY.register(AlongDim(), F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.cumsum,
                  torch.cumprod, "softmax", "log_softmax", "cumsum", "cumprod")
REGISTRY.register(AlongDimModule(), nn.Softmax, nn.LogSoftmax)
