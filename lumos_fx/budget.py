r"""A parameter or FLOP budget: the Lagrangian controller that drives training to it, and the
snap that makes the cut land on it.

With ``Config(target_params=t)`` the complexity term is no longer ``lam`` times the
expected kept fraction :math:`\hat s` of the prunable parameters but (Wang et al. 2020; CoFi, Xia et al. 2022;
Sheared-LLaMA, Xia et al. 2023)

.. math::
    \mathcal{L}_c = \lambda_1 g + \lambda_2 g^2, \qquad g = \frac{\hat s}{t_k} - 1, \qquad
    t_k = 1 - (1 - t)\,\min(1, k / K)

where :math:`k` counts training steps, :math:`K` is ``Config.budget_warmup`` and the
multipliers :math:`\lambda_1, \lambda_2` (initially 0) are *maximised*: every training
step moves them by dual ascent (see :class:`Budget`). :math:`\lambda_1` rises while the
model is above the target and falls below it, so the task loss and the budget settle where
:math:`\hat s = t` without a hand-tuned ``lam``. The miss :math:`g` is relative to the
target: one percentage point over a 5% budget pulls as hard as ten over a 50% one (with the
absolute miss of CoFi, small budgets converged too slowly and ended far off: R^2 0.77
instead of 0.99 on the CFD surrogate at 5%).

With ``Config(target_flops=t)``, :math:`\hat s` is the expected kept fraction of the forward
FLOPs of the gated layers instead: the same sum with every weight entry counted at the
FLOPs it costs (:func:`lumos_fx.costs.parameter_flops`), so a channel of a convolution on a
large feature map weighs more than one on a small map, and a linear layer's none the less.

The controller drives the *expectation*; the cut is deterministic. :func:`snap_to_budget`,
which :func:`lumos_fx.prune` calls first, counts what the eval gates keep and, when that
misses the target by more than ``Config.budget_tolerance``, closes the open units with the
smallest ``log_alpha`` (or re-opens the closed ones with the largest) until it does not;
when the last of them jumps past the tolerance band, the next in order that lands inside
it is taken instead.
It never closes the last open unit of a group that every input-to-output path runs through
(``Plan.essential``): that would leave a model that ignores its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import fx, nn

from .config import Config
from .errors import InputError
from .fxutil import module_device
from .plan import gate_modules, plan_of
from .rounding import rounder

BUDGET = "lumos_budget"
WHAT = {"params": "prunable parameters", "flops": "FLOPs of the gated layers",
        "latency": "the dense model's latency"}


class Budget(nn.Module):
    r"""The multipliers and step count of the Lagrangian controller (see the module doc).

    The multipliers are buffers that :meth:`forward` updates itself by dual ascent,
    :math:`\lambda_1 \mathrel{+}= \eta\,g` and :math:`\lambda_2 \mathrel{+}= \eta\,g^2` with :math:`\eta` =
    ``Config.budget_lr``, in every training-mode call: the step is proportional to the
    miss, whatever optimizer trains the model, and every process of a distributed run
    computes the same one (their gates are the same)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.kind, self.target = config.budget
        self.warmup = int(config.budget_warmup)
        self.lr = float(config.budget_lr)
        self.register_buffer("lambda_1", torch.zeros(()))
        self.register_buffer("lambda_2", torch.zeros(()))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def target_now(self) -> float:
        """The target of this step: from 1 (everything kept) down to ``target`` over the warm-up."""
        ramp = min(1.0, int(self.step) / self.warmup) if self.warmup > 0 else 1.0
        return 1.0 - (1.0 - self.target) * ramp

    def forward(self, kept_fraction: torch.Tensor) -> torch.Tensor:
        gap = kept_fraction / self.target_now() - 1.0
        term = self.lambda_1.clone() * gap + self.lambda_2.clone() * gap * gap  # clones: updated below
        if self.training:
            with torch.no_grad():
                self.lambda_1 += self.lr * gap
                self.lambda_2 += self.lr * gap * gap
                self.step += 1
        return term

    def extra_repr(self) -> str:
        return f"{self.kind}={self.target}, warmup={self.warmup}, lr={self.lr}"


def budget_of(wrapped: fx.GraphModule) -> Budget | None:
    return getattr(wrapped, BUDGET, None)


def attach_budget(wrapped: fx.GraphModule, config: Config) -> None:
    """Give `wrapped` the controller of `config`'s budget; its plan takes `config`."""
    if hasattr(wrapped, BUDGET):
        raise InputError(f"the model already has an attribute '{BUDGET}'; lumos_fx needs that name")
    wrapped.meta["lumos"] = replace(plan_of(wrapped), config=config)
    wrapped.add_submodule(BUDGET, Budget(config).to(module_device(wrapped)))


def cost_model(plan, kind: str):
    """The plan's :class:`~lumos_fx.plan.Cost` that a budget of `kind` counts in."""
    return {"flops": plan.flop_cost, "latency": plan.latency_cost}.get(kind, plan.cost)


@dataclass
class Snap:
    """What :func:`snap_to_budget` found and did, as fractions of what the budget counts
    (``kind``: ``"params"``, ``"flops"`` or ``"latency"``; ``measured``: a latency budget's
    cut model timed against the uncut one, see :mod:`lumos_fx.latency_check`)."""

    target: float
    from_gates: float
    after: float
    closed: int = 0
    reopened: int = 0
    kind: str = "params"
    measured: float | None = None

    def __str__(self) -> str:
        moved = (f"closed {self.closed} more units" if self.closed else
                 f"re-opened {self.reopened} units" if self.reopened else "no snap needed")
        timed = f" (timed: {self.measured:.1%})" if self.measured is not None else ""
        return (f"budget: keep {self.target:.1%} of {WHAT[self.kind]}; the gates kept {self.from_gates:.1%}, "
                f"{moved}: {self.after:.1%}{timed}")


def snap_to_budget(wrapped: fx.GraphModule) -> Snap | None:
    """Move the fewest gates, by ``log_alpha`` order, so that the eval gates keep the budget's
    fraction of prunable parameters (or FLOPs) to within ``Config.budget_tolerance``. Changes the gates
    of `wrapped` in place, so that ``wrapped.eval()`` and the pruned model still agree.
    None when `wrapped` has no budget."""
    budget = budget_of(wrapped)
    if budget is None:
        return None
    plan = plan_of(wrapped)
    cost = cost_model(plan, budget.kind)
    gates = gate_modules(wrapped)
    tol = plan.config.budget_tolerance
    kept = _kept_counter(wrapped, cost)
    with torch.no_grad():
        open_now = _open_now(gates)
        if cost.total == 0:
            return Snap(budget.target, 1.0, 1.0, kind=budget.kind)
        now = kept(open_now)
        snap = Snap(budget.target, now, now, kind=budget.kind)
        if abs(snap.from_gates - budget.target) <= tol:
            return snap
        closing = snap.from_gates > budget.target
        units = sorted(((float(g.log_alpha[u]), gid, u) for gid, g in gates.items() for u in range(g.n)
                        if bool(open_now[gid][u]) == closing), reverse=not closing)
        if closing:  # the last open unit of a group every path runs through stays
            left = {gid: int(open_now[gid].sum()) for gid in plan.essential if gid in gates}
            units = [(la, gid, u) for la, gid, u in units if gid not in left or _take(left, gid)]

        def moved(chosen: list) -> dict:
            masks = {gid: m.clone() for gid, m in open_now.items()}
            for _, gid, u in chosen:
                masks[gid][u] = not closing
            return masks

        def done(k: int) -> bool:
            value = kept(moved(units[:k]))
            return value <= budget.target + tol if closing else value >= budget.target - tol

        lo, hi = 0, len(units)
        while lo < hi:  # the kept fraction is monotone in k
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if done(mid) else (mid + 1, hi)
        chosen = units[:lo]
        if lo and abs(kept(moved(chosen)) - budget.target) > tol:
            # The last unit jumped over the tolerance band (a unit can be several percent of
            # the FLOPs): the next unit in order that lands inside it takes its place.
            inside = (c for c in units[lo:] if abs(kept(moved(chosen[:-1] + [c])) - budget.target) <= tol)
            chosen = next((chosen[:-1] + [c] for c in inside), chosen)
        # Snapped shut: one below the eval gate's exact zero; re-opened: halfway between
        # its exact zero and exact one (eval value 0.5 with the default constants).
        config = plan.config
        value = config.closed_threshold - 1.0 if closing else (config.closed_threshold + config.open_threshold) / 2
        for _, gid, u in chosen:
            gates[gid].log_alpha[u] = value
        snap.after = kept(moved(chosen))
        if closing:
            snap.closed = len(chosen)
        else:
            snap.reopened = len(chosen)
    return snap


def eval_kept(wrapped: fx.GraphModule) -> float:
    """The fraction of what the budget of `wrapped` counts that its eval gates keep, widths
    rounded as prune() rounds them: the snap's starting point (1.0 when nothing is prunable)."""
    budget = budget_of(wrapped)
    cost = cost_model(plan_of(wrapped), budget.kind if budget is not None else "params")
    if cost.total == 0:
        return 1.0
    with torch.no_grad():
        return _kept_counter(wrapped, cost)(_open_now(gate_modules(wrapped)))


def _open_now(gates: dict) -> dict[int, torch.Tensor]:
    return {gid: (g.eval_value() > 0) for gid, g in gates.items()}


def _kept_counter(wrapped: fx.GraphModule, cost):
    """masks -> the fraction of `cost` they keep, with the widths prune() rounds them to."""
    rounded = rounder(wrapped)

    def kept(masks) -> float:
        return float(cost.expected({g: m.to(torch.float64) for g, m in rounded(masks).items()})) / cost.total
    return kept


def _take(left: dict[int, int], gid: int) -> bool:
    """Count one more unit of `gid` closed, unless it is the group's last open one."""
    if left[gid] <= 1:
        return False
    left[gid] -= 1
    return True
