r"""Widths the hardware likes: ``Config(round_to=8)`` makes every pruned width a multiple of 8
(or the full width), by re-opening the closed units the gates rank highest.

A group's multiple is counted in channels of the layer that produces it: ``round_to``, or
the value of the first ``Config.round_to_modules`` spec (a qualified name, a class or a
predicate, as ``leaf_modules`` takes them) that names that layer. A group whose unit spans
:math:`w` channels (an attention head of :math:`w` dims, a conv group) keeps a multiple of
:math:`m = r / \gcd(r, w)` units, so that its :math:`k w` channels are a multiple of
:math:`r`; the dims inside attention heads (a group of their own where they are cut) keep a
multiple of ``round_to`` per head. The model's input features are the data's: never rounded. Rounding only re-opens
units, so the pruned model keeps everything the gates kept; :func:`lumos_fx.budget.snap_to_budget`
counts the rounded widths when it meets a budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from .channels import HeadDimsKey
from .config import module_matches
from .plan import Plan, gate_modules, plan_of

Masks = dict[int, torch.Tensor]


@dataclass(frozen=True)
class Rounded:
    """One group's width rounded: kept channels before and after, and the multiple."""

    group: str
    before: int
    after: int
    multiple: int

    def __str__(self) -> str:
        return f"{self.group} {self.before} -> {self.after}"


def unit_multiples(wrapped: fx.GraphModule) -> dict[int, tuple[int, int, int]]:
    """Group id -> (units a kept count must be a multiple of, channels per unit, the multiple
    in channels), for the prunable groups whose multiple is more than 1 (found once)."""
    if "lumos_multiples" not in wrapped.meta:  # a training step asks: found at the first
        wrapped.meta["lumos_multiples"] = _unit_multiples(wrapped, plan_of(wrapped))
    return wrapped.meta["lumos_multiples"]


def _unit_multiples(wrapped: fx.GraphModule, plan: Plan) -> dict[int, tuple[int, int, int]]:
    config = plan.config
    out = {}
    inputs = {n.name for n in wrapped.graph.nodes if n.op == "placeholder"}
    for group in plan.groups:
        if not group.prunable:
            continue
        spaces = [plan.spaces[k] for k in group.spaces]
        if any(isinstance(k, HeadDimsKey) for k in group.spaces):  # the dims of every head
            layers = [(config.round_to, 1)]
        elif any(s.producer and s.node in inputs for s in spaces):  # input features are the data's
            continue
        else:  # every layer producing the group's channels (a grouped conv after another: both)
            layers = [(_multiple_of(wrapped, s.label, config.round_to, config.round_to_modules),
                       s.size // max(1, np.unique(s.units).size)) for s in spaces if s.producer and s.node is not None]
        if not layers:
            continue
        units = math.lcm(*(multiple // math.gcd(multiple, width) for multiple, width in layers))
        if units > 1:
            multiple, width = layers[0]
            out[group.id] = (units, width, multiple)
    return out


def _multiple_of(wrapped: fx.GraphModule, name: str, default: int, overrides) -> int:
    try:
        module = wrapped.get_submodule(name)
    except AttributeError:
        return default
    return next((int(r) for spec, r in overrides.items() if module_matches(spec, module, name)), default)


def rounder(wrapped: fx.GraphModule) -> Callable[[Masks], Masks]:
    """A function from open masks (group id -> bool per unit) to the rounded ones: each
    group's kept count up to its multiple of units, re-opening its closed units of highest
    ``log_alpha`` first; a closed group stays closed."""
    multiples = unit_multiples(wrapped)
    gates = gate_modules(wrapped)
    order = {gid: torch.argsort(gates[gid].log_alpha.detach(), descending=True) for gid in multiples if gid in gates}

    def apply(masks: Masks) -> Masks:
        out = dict(masks)
        for gid, (units, _, _) in multiples.items():
            mask = masks.get(gid)
            if mask is None or gid not in order:
                continue
            kept, n = int(mask.sum()), mask.numel()
            want = min(n, -(-kept // units) * units) if kept else 0
            if want > kept:
                mask = mask.clone()
                closed = [int(u) for u in order[gid] if not mask[u]]
                mask[closed[:want - kept]] = True
                out[gid] = mask
        return out

    return apply


def rounded_probabilities(wrapped: fx.GraphModule, joined: torch.Tensor) -> torch.Tensor:
    r"""The gates' :math:`P(z \neq 0)` joined in the bank's order, as the budget counts them
    with widths rounded: each rounded group's probabilities scaled so that they sum to its
    expected kept units :math:`E` rounded up to its multiple, :math:`\lceil E / m \rceil m`
    (at most 1 each), with the gradient of the probabilities themselves (a straight-through
    estimate: the rounding has none)."""
    if not unit_multiples(wrapped):
        return joined
    group, units, sizes = _segments(wrapped, joined.device)
    with torch.no_grad():
        expected = joined.new_zeros(len(units) + 1).index_add(0, group, joined)[:-1]
        rounded = torch.minimum(torch.ceil(expected / units - 1e-6) * units, sizes)
        ratio = torch.cat([rounded / expected.clamp(min=1e-12), joined.new_ones(1)])  # the last: not rounded
        value = torch.clamp(joined * ratio[group], max=1.0)
    return joined + (value - joined).detach()


def _segments(wrapped: fx.GraphModule, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the joined probabilities (a training step asks; found once per device): each unit's
    rounded group (its index among them, or their count for a unit not rounded), and each
    rounded group's multiple of units and its size."""
    cache = wrapped.meta.setdefault("lumos_rounding_segments", {})
    if device not in cache:
        plan, multiples = plan_of(wrapped), unit_multiples(wrapped)
        sizes = torch.tensor([float(plan.groups[gid].n_units) for gid in multiples])
        units = torch.tensor([float(u) for u, _, _ in multiples.values()])
        cache[device] = (plan.segments(list(multiples)).to(device), units.to(device), sizes.to(device))
    return cache[device]


def round_widths(wrapped: fx.GraphModule) -> list[Rounded]:
    """Re-open units of `wrapped`'s gates (in place, as the budget's snap does) so that every
    pruned width is a multiple of its ``round_to``; what it rounded, per group."""
    plan: Plan = plan_of(wrapped)
    multiples = unit_multiples(wrapped)
    if not multiples:
        return []
    gates = gate_modules(wrapped)
    reopen = (plan.config.closed_threshold + plan.config.open_threshold) / 2  # eval value 0.5
    with torch.no_grad():
        before = {gid: g.eval_value() > 0 for gid, g in gates.items()}
        after = rounder(wrapped)(before)
        done = []
        for gid, mask in after.items():
            grown = mask & ~before[gid]
            if grown.any():
                gates[gid].log_alpha[grown] = reopen
                _, width, multiple = multiples[gid]
                done.append(Rounded(plan.groups[gid].name, int(before[gid].sum()) * width,
                                    int(mask.sum()) * width, multiple))
    return done
