"""Cut reference models at fixed fractions of closed gates and print what is left."""

from __future__ import annotations

from collections.abc import Callable

import torch

import lumos_fx

from .vision.gates import close_fraction


def print_cuts(models: dict[str, tuple[torch.nn.Module, Callable[[int], tuple]]], fractions: list[float]) -> None:
    """For each model (with a function of a seed giving its inputs) and fraction: parameters
    and FLOPs before -> after, and the largest difference between the pruned and the gated
    model on inputs other than the example."""
    print(f"{'model':<16} {'closed':>6} {'parameters':>26} {'kept':>6} {'FLOPs':>30} {'max rel diff':>12}")
    for name, (model, inputs) in models.items():
        torch.manual_seed(0)
        wrapped = lumos_fx.instrument(model, inputs(0))
        for fraction in fractions:
            close_fraction(wrapped, fraction, seed=0)
            pruned = lumos_fx.prune(wrapped)
            s = lumos_fx.summary(pruned)
            x = inputs(1)
            with torch.no_grad():
                ref = wrapped.eval()(*x)
                diff = ((pruned(*x) - ref).abs().max() / ref.abs().max()).item()
            print(f"{name:<16} {fraction:>6.0%} {s.params_before:>12,} -> {s.params_after:>10,} "
                  f"{s.params_after / s.params_before:>6.1%} {s.flops_before:>14,} -> {s.flops_after:>13,} "
                  f"{diff:>12.1e}")
