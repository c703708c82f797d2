r"""A latency budget's cut, timed: prune() snaps the gates by the latency model, times the
cut model against the uncut one, and where the clock disagrees rescales the model's savings
and snaps again.

With :math:`m` the measured fraction of the uncut model's latency and :math:`\pi` the one
the model expected of that cut, the savings scale :math:`\alpha` of
:mod:`lumos_fx.latency_calibration` becomes :math:`\alpha (1 - m) / (1 - \pi)`, so that at
this cut the model says what the clock said; the snap then moves the gates again, from
where training left them: a re-snap that started from the last one would close first the
open units the training kept weakest, before the ones the last snap re-opened (which sit
at the midpoint ``log_alpha``), and a unit of an early convolution is worth several
points of latency and much accuracy. At most :data:`ROUNDS` timings (the last snap is
always timed), until :math:`|m - t|` is within ``Config.budget_tolerance`` or a tenth of
the target: one timing moves by several percent between calls on a busy machine, and a
re-snap closes trained units with no training after it (at a 2-point band the CFD MLP's
re-snaps closed 75-103 units and cost up to 0.38 of R^2 in 3 of 3 runs with fresh tables;
at a tenth, 1 of 3 re-snapped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import fx

from .budget import Snap, snap_to_budget
from .latency import inputs_at, timed_ratio
from .plan import gate_modules, plan_of

ROUNDS = 3


def settle(wrapped: fx.GraphModule, snap: Snap, trained: dict[int, torch.Tensor],
           build: Callable[[], tuple[fx.GraphModule, fx.GraphModule]]) -> Snap:
    """`snap` after timing: `trained` holds each gate's ``log_alpha`` before the snap, `build`
    gives the model cut at the current gates and the model cut nowhere; returns the last
    snap, made from the trained gates, with its ``measured`` fraction."""
    plan = plan_of(wrapped)
    model = plan.latency_cost
    inputs, _ = inputs_at(plan.example_inputs, plan.config.latency_batch)
    close_enough = max(plan.config.budget_tolerance, 0.1 * plan.config.target_latency)
    gates = gate_modules(wrapped)
    for round_ in range(ROUNDS):
        cut, whole = build()
        measured = timed_ratio(cut.eval(), whole.eval(), inputs)
        snap.measured = measured
        if abs(measured - snap.target) <= close_enough or snap.after >= 1 or round_ == ROUNDS - 1:
            break  # the last snap is the one timed
        model.savings_scale = min(3.0, max(0.1, model.savings_scale * (1 - measured) / (1 - snap.after)))
        with torch.no_grad():
            for gid, log_alpha in trained.items():
                gates[gid].log_alpha.copy_(log_alpha)
        again = snap_to_budget(wrapped)
        snap = replace(snap, after=again.after, closed=again.closed, reopened=again.reopened, measured=None)
    return snap
