"""The L0 complexity term and the optimizer parameter groups."""

from __future__ import annotations

import math

import torch
from torch import fx

from .budget import Budget, budget_of, cost_model
from .errors import GateError, TrainingError
from .essential_floor import floored_probabilities
from .plan import GATES, gate_modules, gates, instrumented, plan_of
from .rounding import rounded_probabilities


def expected_alive(wrapped: fx.GraphModule) -> tuple[torch.Tensor, int]:
    """Expected number of prunable parameters still alive, and their total.

    A weight is alive when every channel it connects is alive (see :mod:`lumos_fx.costs`).
    """
    wrapped = instrumented(wrapped)
    plan = plan_of(wrapped)
    if not plan.gate_keys:
        return torch.zeros(()), 0
    return plan.cost.joined(wrapped.get_submodule(GATES).prob_joined()), plan.cost.total


def expected_kept(wrapped: fx.GraphModule) -> torch.Tensor:
    """Expected kept fraction of what the model's budget counts: prunable parameters, or
    with ``Config(target_flops=...)`` the gated layers' FLOPs. Differentiable in the gates.
    Widths count as prune() makes them: rounded (:mod:`lumos_fx.rounding`), and the one unit
    it keeps of a group every path runs through free (:mod:`lumos_fx.essential_floor`)."""
    wrapped = instrumented(wrapped)
    return _kept(wrapped, _counted(wrapped)[2])


def _counted(wrapped: fx.GraphModule):
    """The plan, the budget (or None) and the cost model the budget counts in (parameters without one)."""
    plan, budget = plan_of(wrapped), budget_of(wrapped)
    return plan, budget, cost_model(plan, budget.kind if budget is not None else "params")


def _kept(wrapped: fx.GraphModule, cost) -> torch.Tensor:
    if cost.total == 0:
        return torch.ones(())
    # getattr, not get_submodule: every training step asks, and the bank is a direct child
    bank = getattr(wrapped, GATES)
    p = floored_probabilities(wrapped, bank.open_joined() if bank.frozen else bank.prob_joined())
    return cost.joined(rounded_probabilities(wrapped, p)) / cost.total


def complexity_loss(wrapped: fx.GraphModule) -> torch.Tensor:
    """``lam`` times the expected fraction of prunable parameters still alive (Lumos eq. 4-5);
    with ``Config(target_params=t)`` or ``Config(target_flops=t)``, the budget controller's
    term instead (see :mod:`lumos_fx.budget`), which advances the controller by one step in
    training mode. Zero during the gates' warm-up (``Config.gate_warmup``) and once
    :func:`lumos_fx.freeze_gates` has frozen them.

    Add it to the task loss: ``loss = task_loss + lumos_fx.complexity_loss(wrapped)``.

    Raises, at the first step where the term or a budget multiplier is NaN or inf (one check
    per call, so that a diverged run stops there and not at prune()):
        GateError: a gate's ``log_alpha`` is NaN or inf (named, with the step).
        TrainingError: the budget's multipliers diverged (lower ``Config.budget_lr``).
    """
    wrapped = instrumented(wrapped)
    plan, budget, cost = _counted(wrapped)
    if cost.total == 0:
        return torch.zeros(())  # nothing is prunable
    if getattr(wrapped, GATES).frozen:
        return torch.zeros(())  # freeze_gates fixed the size: the budget has done its work
    kept = _kept(wrapped, cost)
    if getattr(wrapped, GATES).held:
        term = kept * 0.0  # the gates' warm-up: no pressure yet, and the budget waits
    else:
        term = budget(kept) if budget is not None else plan.config.lam * kept
    _check_finite(wrapped, term, budget)
    return term


def _check_finite(wrapped: fx.GraphModule, term: torch.Tensor, budget: Budget | None) -> None:
    # One sum, one read: NaN and inf survive addition (inf - inf is NaN), so the sum is
    # finite exactly when every part is, short of an overflow that is a divergence too.
    watched = term.detach() if budget is None else term.detach() + budget.lambda_1 + budget.lambda_2
    if not math.isfinite(watched.item()):
        raise _divergence(wrapped, term, budget)


def _divergence(wrapped: fx.GraphModule, term: torch.Tensor, budget: Budget | None) -> TrainingError:
    """The error for a non-finite complexity term or multiplier: the gates that hold NaN or
    inf, or else the budget's multipliers (with finite gates nothing else can diverge:
    Config keeps ``lam`` finite)."""
    step = max(g.draws for g in gate_modules(wrapped).values())
    where = f"step {step} (the model's forward calls in train mode so far)"
    bad = [f"'{name}' ({int((~torch.isfinite(g.log_alpha)).sum())} of {g.n} values)"
           for name, g in gates(wrapped).items() if not torch.isfinite(g.log_alpha).all()]
    if bad:
        return GateError(f"complexity_loss is {term.item()} at {where}: the log_alpha of gate {', '.join(bad)} "
                         "became NaN or inf. An earlier step's gradients were not finite (check the task loss and "
                         "the batches for NaN), or the gates' learning rate is too high: lower Config.gate_lr (now "
                         f"{plan_of(wrapped).config.gate_lr}) or param_groups(wrapped, lr, gate_lr=...).")
    assert budget is not None
    return TrainingError(f"complexity_loss: the budget's multipliers diverged at {where}: lambda_1="
                      f"{budget.lambda_1.item()}, lambda_2={budget.lambda_2.item()} (the term is {term.item()}). "
                      f"Lower Config.budget_lr (now {budget.lr}).")


def param_groups(wrapped: fx.GraphModule, lr: float, *, gate_lr: float | None = None, weight_decay: float = 0.0):
    """Optimizer parameter groups: the model's weights with `lr` and `weight_decay`; the
    gates' ``log_alpha`` with `gate_lr` (default ``Config.gate_lr``) and no weight decay.
    (A budget's multipliers are not parameters: its controller updates them itself.)

    ``torch.optim.Adam(lumos_fx.param_groups(wrapped, lr=1e-3))``
    """
    wrapped = instrumented(wrapped)
    plan = plan_of(wrapped)
    gate_params = [g.log_alpha for g in gates(wrapped).values()]
    ids = {id(p) for p in gate_params}
    weights = [p for p in wrapped.parameters() if p.requires_grad and id(p) not in ids]
    return [
        {"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
        {"params": gate_params, "lr": plan.config.gate_lr if gate_lr is None else gate_lr,
         "weight_decay": 0.0, "name": "gates"},
    ]
