r"""The last unit of a group every input-to-output path runs through is free: the budget
does not count it, and does not press on it.

prune() keeps one unit of each such group (``Plan.essential``): closing them all would
leave a model that ignores its inputs. A budget that counted that unit would press on it
as on any other, and a costly group that the task needs only one channel of (the first
convolution at full resolution under a latency budget) is pushed to an expected width
below one unit, where most draws of the training gates switch the whole model off and the
task loss can no longer pull it back. So the expected kept units
:math:`E_g = \sum_{u \in g} p_u` of such a group count as :math:`\max(E_g, 1)`:

.. math::
    p'_u = p_u \, \frac{\max(E_g, 1)}{E_g},

and below one unit the gradient that would close its units further is dropped, while one
that opens them (a budget below its target) passes: :math:`\partial L / \partial p_u`
is :math:`\min(0, \partial L / \partial p'_u)` where :math:`E_g < 1`, else
:math:`\partial L / \partial p'_u`.
"""

from __future__ import annotations

import torch
from torch import fx

from .plan import plan_of


def floored_probabilities(wrapped: fx.GraphModule, joined: torch.Tensor) -> torch.Tensor:
    r"""The gates' :math:`P(z \neq 0)` joined in the bank's order, each essential group's
    summing to at least one, with its closing gradient dropped below (see the module docstring)."""
    segments = _segments(wrapped, joined.device)
    if segments is None:
        return joined
    group, count = segments
    with torch.no_grad():
        expected = joined.new_zeros(count + 1).index_add(0, group, joined)[:-1]
        if not bool((expected < 1).any()):  # the usual step: a dozen ops and a hook saved
            return joined
        scale = torch.cat([expected.clamp(min=1e-12, max=1.0).reciprocal(), joined.new_ones(1)])[group]
        held = torch.cat([expected < 1, expected.new_zeros(1, dtype=torch.bool)])[group]
    floored = joined + (joined * scale - joined).detach()
    if floored.requires_grad:
        floored.register_hook(lambda grad: grad.masked_fill(held & (grad > 0), 0.0))
    return floored


def _segments(wrapped: fx.GraphModule, device: torch.device) -> tuple[torch.Tensor, int] | None:
    """Each unit's essential group (its index among them, or their count for any other
    unit) and their count; None without essential groups. Found once per device: a
    training step asks."""
    cache = wrapped.meta.setdefault("lumos_essential_segments", {})
    if device not in cache:
        plan = plan_of(wrapped)
        essential = [gid for gid in plan.gate_keys if gid in plan.essential]
        cache[device] = (plan.segments(essential).to(device), len(essential)) if essential else None
    return cache[device]
