"""Cut every reference GNN at fixed fractions of closed gates and report what is left.

    python -m models_zoo.graph [--width 1.0] [--fractions 0.3 0.7]

For each model (Molhiv GINE and GIN, PPA GCN, GAT) and fraction: parameters and FLOPs
before -> after, and the largest difference between the pruned and the gated model on
another batch of random graphs (other node, edge and graph counts).
"""

from __future__ import annotations

import argparse

from ..cut_report import print_cuts
from .models import random_graphs, reference_models


def main() -> None:
    parser = argparse.ArgumentParser(description="cut the reference GNNs at fixed fractions of closed gates")
    parser.add_argument("--width", type=float, default=1.0, help="hidden size factor (1.0: OGB's width 300)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.7])
    args = parser.parse_args()
    models = {name: (model, lambda seed, kind=kind: random_graphs(8, seed, kind=kind))
              for name, (model, kind) in reference_models(args.width).items()}
    print_cuts(models, args.fractions)


if __name__ == "__main__":
    main()
