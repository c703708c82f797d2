"""Freezing the gates for a last fine-tune of the weights, inside the gated model."""

from __future__ import annotations

from torch import fx

from .plan import GATES, gate_modules, instrumented
from .prune import SETTLED, settle


def freeze_gates(wrapped: fx.GraphModule) -> None:
    """Fix the gates of `wrapped` at what :func:`lumos_fx.prune` will cut, so that the
    training that follows fine-tunes the weights of the cut model and nothing else.

    The gates are first settled as prune() settles them (snapped to the budget, widths
    rounded; see :func:`lumos_fx.prune.settle`), in place. From then on every gate gives
    its eval value :math:`z = \\min(1, \\max(0, \\sigma(\\log\\alpha)(\\zeta - \\gamma) + \\gamma))`
    in training too, detached (``log_alpha`` takes no gradient, draws no noise), and
    :func:`lumos_fx.complexity_loss` is zero. A closed channel is then exactly zero in
    training, so the weights adapt to the cut model; prune() moves no gate and its summary
    reports the snap done here. The flag is part of each gate's state dict.

    Idempotent: a second call changes nothing.
    """
    wrapped = instrumented(wrapped)
    if getattr(wrapped, GATES).frozen:
        return
    wrapped.meta[SETTLED] = settle(wrapped)
    for gate in gate_modules(wrapped).values():
        gate.frozen = True
