r"""The latency model checked against one cut model, timed, before training starts.

A cut model runs its ops at other sizes than the dense one, in a graph of its own: layers
at odd widths, a kernel whose speed depends on what ran before it. instrument() therefore
cuts a copy of the model to the budget once (each gate's units closed at random, in the
share of the target, the weights as they are) with prune(), whose snap times the cut
against the uncut model and rescales the model's expected savings until they agree (see
:mod:`lumos_fx.latency_check`): training then aims the controller with a model that has
seen one real cut. The copy shares the model's plan, so the scale found stays with it; the
model's own gates are not touched.
"""

from __future__ import annotations

import warnings

import torch
from torch import fx

from .fxutil import copy_instrumented
from .latency import warn_if_out_of_reach
from .plan import gate_modules, plan_of
from .prune import prune


def calibrate(wrapped: fx.GraphModule) -> None:
    """Set the savings scale of `wrapped`'s latency model (``plan.latency_cost``) from one cut."""
    plan = plan_of(wrapped)
    cut = copy_instrumented(wrapped)
    generator = torch.Generator().manual_seed(plan.config.gate_seed)
    with torch.no_grad():
        for gate in gate_modules(cut).values():
            closed = torch.rand(gate.n, generator=generator) > plan.config.target_latency
            gate.log_alpha.copy_(torch.where(closed, -6.0, 6.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what prune() tells of the copy is not the user's model
        prune(cut)
    warn_if_out_of_reach(plan.latency_cost, plan.config.target_latency)
