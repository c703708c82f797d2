"""The L0 complexity term and the optimizer parameter groups."""

from __future__ import annotations

import torch
from torch import fx

from .budget import budget_of, cost_model
from .instrument import gate_modules, gates, plan_of


def expected_alive(wrapped: fx.GraphModule) -> tuple[torch.Tensor, int]:
    """Expected number of prunable parameters still alive, and their total.

    A weight is alive when every channel it connects is alive (see :mod:`lumos_fx.costs`).
    """
    plan = plan_of(wrapped)
    probs = {gid: gate.prob_nonzero() for gid, gate in gate_modules(wrapped).items()}
    if not probs:
        return torch.zeros(()), 0
    return plan.cost.expected(probs), plan.cost.total


def expected_kept(wrapped: fx.GraphModule) -> torch.Tensor:
    """Expected kept fraction of what the model's budget counts: prunable parameters, or
    with ``Config(target_flops=...)`` the gated layers' FLOPs. Differentiable in the gates."""
    cost = _counted(wrapped)
    if cost.total == 0:
        return torch.ones(())
    return cost.expected({gid: gate.prob_nonzero() for gid, gate in gate_modules(wrapped).items()}) / cost.total


def _counted(wrapped: fx.GraphModule):
    budget = budget_of(wrapped)
    return cost_model(plan_of(wrapped), budget.kind if budget is not None else "params")


def complexity_loss(wrapped: fx.GraphModule) -> torch.Tensor:
    """``lam`` times the expected fraction of prunable parameters still alive (Lumos eq. 4-5);
    with ``Config(target_params=t)`` or ``Config(target_flops=t)``, the budget controller's
    term instead (see :mod:`lumos_fx.budget`), which advances the controller by one step in
    training mode. Zero during the gates' warm-up (``Config.gate_warmup``).

    Add it to the task loss: ``loss = task_loss + lumos_fx.complexity_loss(wrapped)``.
    """
    if _counted(wrapped).total == 0:
        return torch.zeros(())  # nothing is prunable
    kept = expected_kept(wrapped)
    if any(g.held for g in gate_modules(wrapped).values()):
        return kept * 0.0  # the gates' warm-up: no pressure yet, and the budget waits
    budget = budget_of(wrapped)
    if budget is not None:
        return budget(kept)
    return plan_of(wrapped).config.lam * kept


def param_groups(wrapped: fx.GraphModule, lr: float, *, gate_lr: float | None = None, weight_decay: float = 0.0):
    """Optimizer parameter groups: the model's weights with `lr` and `weight_decay`; the
    gates' ``log_alpha`` with `gate_lr` (default ``Config.gate_lr``) and no weight decay.
    (A budget's multipliers are not parameters: its controller updates them itself.)

    ``torch.optim.Adam(lumos_fx.param_groups(wrapped, lr=1e-3))``
    """
    plan = plan_of(wrapped)
    gate_params = [g.log_alpha for g in gates(wrapped).values()]
    ids = {id(p) for p in gate_params}
    weights = [p for p in wrapped.parameters() if p.requires_grad and id(p) not in ids]
    return [
        {"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
        {"params": gate_params, "lr": plan.config.gate_lr if gate_lr is None else gate_lr,
         "weight_decay": 0.0, "name": "gates"},
    ]
