r"""The latency model checked against one cut model, timed, before training starts.

A cut model runs its ops at other sizes than the dense one, in a graph of its own: layers
at odd widths, a kernel whose speed depends on what ran before it. instrument() therefore
cuts a copy of the model to the budget once (each gate's units closed at random, in the
share of the target, then snapped to it as prune() snaps, the weights as they are) and
times it against a copy cut nowhere, both as prune() returns them, interleaved. With
:math:`\pi` the fraction of the dense latency the model of :mod:`lumos_fx.latency` expects
of that cut and :math:`m` the fraction measured, the savings it expects are scaled by

.. math::
    \alpha = \frac{1 - m}{1 - \pi}, \qquad \hat T' = T_\mathrm{dense} - \alpha\,(T_\mathrm{dense} - \hat T)

(clamped to [0.25, 2]), so that at the cut it saw the model says what the clock said.
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from torch import fx

from .budget import BUDGET
from .fxutil import copy_instrumented
from .latency import inputs_at, warn_if_out_of_reach
from .plan import gate_modules, plan_of
from .prune import prune


def calibrate(wrapped: fx.GraphModule, repeats: int = 30) -> None:
    """Set the savings scale of `wrapped`'s latency model (``plan.latency_cost``)."""
    plan = plan_of(wrapped)
    model = plan.latency_cost
    inputs, _ = inputs_at(plan.example_inputs, plan.config.latency_batch)
    whole, cut = copy_instrumented(wrapped), copy_instrumented(wrapped)
    whole.delete_submodule(BUDGET)  # cut nowhere: no snap
    generator = torch.Generator().manual_seed(plan.config.gate_seed)
    with torch.no_grad():
        for gate in gate_modules(cut).values():
            closed = torch.rand(gate.n, generator=generator) > plan.config.target_latency
            gate.log_alpha.copy_(torch.where(closed, -6.0, 6.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what prune() tells of the copies is not the user's model
        pruned = {"whole": prune(whole).eval(), "cut": prune(cut).eval()}
    with torch.no_grad():
        masks = {gid: (g.eval_value() > 0).double() for gid, g in gate_modules(cut).items()}
        expected = float(model.expected(masks)) / model.total
        measured = _ratio(pruned["cut"], pruned["whole"], inputs, repeats)
    if expected < 1:
        model.savings_scale = min(2.0, max(0.25, (1 - measured) / (1 - expected)))
        warn_if_out_of_reach(model, plan.config.target_latency)


def _ratio(cut, whole, inputs: tuple, repeats: int) -> float:
    """Median seconds of `cut` over `whole`'s, the two taking turns."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = {"cut": [], "whole": []}
    for model in (cut, whole):
        model(*inputs)
    for _ in range(repeats):
        for name, model in (("cut", cut), ("whole", whole)):
            sync()
            start = time.perf_counter()
            model(*inputs)
            sync()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["cut"]) / statistics.median(times["whole"])
