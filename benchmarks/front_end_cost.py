"""What lumos_fx's front end costs on a model of the coverage benchmark: instrument() plus
prune() against three forward+backward passes of the plain model on the same example.

    python -m benchmarks.front_end_cost                        # the benchmark's largest model
    python -m benchmarks.front_end_cost --model timm/resnet18

Each is timed ``--repeats`` times, interleaved (a noisy machine slows both alike); the
medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import lumos_fx
from benchmarks.coverage_models import by_key


def _three_passes(model, example) -> float:
    start = time.perf_counter()
    for _ in range(3):
        out = model(*example)
        torch.stack([t.float().sum() for t in torch.utils._pytree.tree_leaves(out)
                     if isinstance(t, torch.Tensor) and t.is_floating_point()]).sum().backward()
    return time.perf_counter() - start


def _front_end(model, example) -> float:
    start = time.perf_counter()
    lumos_fx.prune(lumos_fx.instrument(model, example_inputs=example))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a coverage model key (default: the one with the most parameters)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = by_key()
    built = {}
    if args.model is None:
        for key, case in cases.items():  # the largest model that builds here
            try:
                built[key] = case.build()
            except Exception:
                continue
        key = max(built, key=lambda k: sum(p.numel() for p in built[k][0].parameters()))
    else:
        key = args.model
        built[key] = cases[key].build()
    model, example, _ = built[key]
    front, passes = [], []
    for _ in range(args.repeats):
        passes.append(_three_passes(model.train(), example))
        front.append(_front_end(model.eval(), example))
    a, b = statistics.median(front), statistics.median(passes)
    print(f"{key}: {sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"instrument + prune: {a:.2f} s, three forward+backward passes: {b:.2f} s, ratio {a / b:.1f}x "
          f"(medians of {args.repeats} interleaved runs)")


if __name__ == "__main__":
    main()
