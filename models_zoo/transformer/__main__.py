"""The reference ViT, trained dense and with lumos_fx gates on the same data; what the cut
removed (heads, head dims, MLP units, input channels), accuracy, and CPU latency side by side.

    python -m models_zoo.transformer [--steps 1500] [--lam 1.0] [--ramp 600] [--attention hand|sdpa|mha]

Data: the blob images of :mod:`models_zoo.transformer.finetune` (channel 0 blob A, channel
1 blob B, channel 2 noise); the task is the quadrants of both blobs (16 classes).
"""

from __future__ import annotations

import argparse
import time

import torch

import lumos_fx

from ..measure import interleaved_latency
from .finetune import SIZE, accuracy, blobs, fit, task_a
from .models import ViT


def vit(attention: str) -> ViT:
    torch.manual_seed(0)
    return ViT(image=SIZE, patch=4, in_channels=3, n_classes=16, dim=48, depth=3, heads=4,
               sdpa=attention == "sdpa", mha=attention == "mha")


def cut_table(summary) -> list[str]:
    """The summary's rows for heads, head dims and MLP widths, one line each."""
    return [f"  {row.name:<48} {row.before:>4} -> {row.after}" for row in summary.groups]


def main() -> None:
    parser = argparse.ArgumentParser(description="train the reference ViT dense and gated, cut it, compare")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--ramp", type=int, default=600, help="steps over which the complexity term's weight grows from 0 to 1")
    parser.add_argument("--attention", choices=["hand", "sdpa", "mha"], default="sdpa")
    args = parser.parse_args()
    images, centres = blobs(6000, seed=0)
    x, y = torch.from_numpy(images), torch.from_numpy(task_a(centres))
    train, test = slice(0, 5000), slice(5000, None)

    start = time.perf_counter()
    dense = vit(args.attention)
    fit(dense, dense.parameters(), x[train], y[train], args.steps)
    dense_time = time.perf_counter() - start
    start = time.perf_counter()
    wrapped = lumos_fx.instrument(vit(args.attention), (x[:8],), feature_names=["blob A", "blob B", "noise"],
                                  config=lumos_fx.Config(lam=args.lam))
    fit(wrapped, lumos_fx.param_groups(wrapped, lr=1e-3), x[train], y[train], args.steps,
        extra=lambda: lumos_fx.complexity_loss(wrapped), ramp=args.ramp)
    pruned = lumos_fx.prune(wrapped)
    gated_time = time.perf_counter() - start
    summary = lumos_fx.summary(pruned)

    print(f"ViT ({args.attention} attention), {args.steps} steps of batch 64, lam {args.lam} reached after {args.ramp} steps")
    print(f"test accuracy: dense {accuracy(dense, x[test], y[test]):.3f}, gated {accuracy(wrapped, x[test], y[test]):.3f}, "
          f"pruned {accuracy(pruned, x[test], y[test]):.3f}")
    print(f"training time: dense {dense_time:.0f} s, gated + prune {gated_time:.0f} s")
    print("cut (units before -> after):")
    print("\n".join(cut_table(summary)))
    print(f"parameters {summary.params_before:,} -> {summary.params_after:,}; "
          f"FLOPs {summary.flops_before:,} -> {summary.flops_after:,}")
    for name, (kept, removed) in summary.features.items():
        print(f"input '{name}': kept {kept}, removed {removed}")
    for batch, repeats in ((1, 300), (256, 40)):
        times = interleaved_latency({"dense": dense, "pruned": pruned}, (x[:batch],), repeats=repeats)
        print(f"CPU latency, batch {batch}: dense {times['dense'] * 1e3:.3f} ms, pruned {times['pruned'] * 1e3:.3f} ms, "
              f"pruned / dense {times['pruned'] / times['dense']:.2f} (median of {repeats} interleaved runs)")


if __name__ == "__main__":
    main()
