"""Cut every reference CNN at fixed fractions of closed channels and report what is left.

    python -m models_zoo.vision [--width 1.0] [--size 32] [--fractions 0.3 0.7]

For each model and fraction: parameters and FLOPs before -> after, and the largest
difference between the pruned and the gated model on fresh inputs (batch 2).
"""

from __future__ import annotations

import argparse

import torch

import lumos_fx

from .gates import close_fraction
from .models import reference_models


def main() -> None:
    parser = argparse.ArgumentParser(description="cut the reference CNNs at fixed fractions of closed channels")
    parser.add_argument("--width", type=float, default=1.0, help="channel width factor")
    parser.add_argument("--size", type=int, default=32, help="input side length")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.7])
    args = parser.parse_args()
    print(f"{'model':<16} {'closed':>6} {'parameters':>26} {'kept':>6} {'FLOPs':>30} {'max rel diff':>12}")
    for name, (model, shape) in reference_models(args.width, args.size).items():
        torch.manual_seed(0)
        wrapped = lumos_fx.instrument(model, (torch.randn(2, *shape),))
        for fraction in args.fractions:
            close_fraction(wrapped, fraction, seed=0)
            pruned = lumos_fx.prune(wrapped)
            s = lumos_fx.summary(pruned)
            x = torch.randn(2, *shape)
            with torch.no_grad():
                ref = wrapped.eval()(x)
                diff = ((pruned(x) - ref).abs().max() / ref.abs().max()).item()
            print(f"{name:<16} {fraction:>6.0%} {s.params_before:>12,} -> {s.params_after:>10,} "
                  f"{s.params_after / s.params_before:>6.1%} {s.flops_before:>14,} -> {s.flops_after:>13,} "
                  f"{diff:>12.1e}")


if __name__ == "__main__":
    main()
