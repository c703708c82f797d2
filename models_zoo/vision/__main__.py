"""Cut every reference CNN at fixed fractions of closed channels and report what is left.

    python -m models_zoo.vision [--width 1.0] [--size 32] [--fractions 0.3 0.7]

For each model and fraction: parameters and FLOPs before -> after, and the largest
difference between the pruned and the gated model on fresh inputs (batch 2).
"""

from __future__ import annotations

import argparse

import torch

from ..cut_report import print_cuts
from .models import reference_models


def main() -> None:
    parser = argparse.ArgumentParser(description="cut the reference CNNs at fixed fractions of closed channels")
    parser.add_argument("--width", type=float, default=1.0, help="channel width factor")
    parser.add_argument("--size", type=int, default=32, help="input side length")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.7])
    args = parser.parse_args()
    models = {name: (model, lambda seed, shape=shape: (torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed)),))
              for name, (model, shape) in reference_models(args.width, args.size).items()}
    print_cuts(models, args.fractions)


if __name__ == "__main__":
    main()
