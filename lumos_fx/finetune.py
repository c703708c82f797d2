"""Freezing the gates for a last fine-tune of the weights, inside the gated model."""

from __future__ import annotations

import weakref

import torch
from torch import fx

from .plan import GATES, gate_modules, instrumented
from .prune import settle, settled_record


def freeze_gates(wrapped: fx.GraphModule, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Fix the gates of `wrapped` at what :func:`lumos_fx.prune` will cut, so that the
    training that follows fine-tunes the weights of the cut model and nothing else.

    The gates are first settled as prune() settles them (snapped to the budget, widths
    rounded; see :func:`lumos_fx.prune.settle`), in place. From then on every gate gives
    its eval value :math:`z = \\min(1, \\max(0, \\sigma(\\log\\alpha)(\\zeta - \\gamma) + \\gamma))`
    in training too, detached (``log_alpha`` takes no gradient, draws no noise), and
    :func:`lumos_fx.complexity_loss` is zero. A closed channel is then exactly zero in
    training, so the weights adapt to the cut model; prune() moves no gate and its summary
    reports the snap done here. The flag and the snap are part of the state dict.

    With the `optimizer` that trains the model, ``log_alpha`` instead stays in the autograd
    graph with a zero gradient, and the optimizer drops the gates' gradients before each
    step (a step pre-hook), so they still do not move. That is what a model under
    ``DistributedDataParallel`` needs: DDP (without ``find_unused_parameters=True``) waits
    for a gradient of every parameter it was given, and fails the step after one got none.
    :func:`lumos_fx.fit` passes its own.

    Idempotent: a second call changes nothing, but for hooking an optimizer not given before.
    """
    wrapped = instrumented(wrapped)
    bank = getattr(wrapped, GATES)
    if not bank.frozen:
        bank.settled = settled_record(settle(wrapped))
        for gate in gate_modules(wrapped).values():
            gate.frozen = True
    if optimizer is not None:
        bank.frozen_in_graph = True
        _drop_gate_grads_before_steps(optimizer, bank)


_HOOKED = weakref.WeakKeyDictionary()  # optimizer -> the gate banks whose gradients it drops


def _drop_gate_grads_before_steps(optimizer: torch.optim.Optimizer, bank: torch.nn.Module) -> None:
    hooked = _HOOKED.setdefault(optimizer, weakref.WeakSet())
    if bank in hooked:
        return
    hooked.add(bank)

    def drop(opt, args, kwargs):
        if bank.frozen:  # an Adam step on a zero gradient still moves by momentum
            for gate in bank.values():
                gate.log_alpha.grad = None
    optimizer.register_step_pre_hook(drop)
