"""Scenario S2 of the paper: fine-tune a pretrained ViT with its backbone frozen; the gates
learn which heads, MLP units and input channels the new task needs; then cut.

    python -m models_zoo.transformer.finetune [--steps 600] [--lam 0.5]

Data: 16x16 images with three channels. Channel 0 holds a Gaussian blob A, channel 1 a
blob B, channel 2 only noise. Task A (pretraining): the quadrants of both blobs (16
classes). Task B (the shifted task to fine-tune for): whether blob A lies within 4 pixels
of the image centre, which blob B and the noise say nothing about.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx

from ..cache import cached
from .models import ViT

SIZE = 16


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 16, 16) and blob centres (n, 2, 2) as (blob, (row, col))."""

    def make():
        rng = np.random.default_rng(seed)
        centres = rng.uniform(2, SIZE - 2, size=(n, 2, 2))
        grid = np.arange(SIZE)
        images = np.empty((n, 3, SIZE, SIZE), np.float32)
        for b in range(2):
            rows = np.exp(-((grid[None, :] - centres[:, b, 0:1]) ** 2) / 4.0)
            cols = np.exp(-((grid[None, :] - centres[:, b, 1:2]) ** 2) / 4.0)
            images[:, b] = rows[:, :, None] * cols[:, None, :]
        images[:, 2] = rng.normal(0, 1, size=(n, SIZE, SIZE))
        images[:, :2] += rng.normal(0, 0.05, size=(n, 2, SIZE, SIZE))
        return images, centres.astype(np.float32)

    return cached(f"blobs_{n}_{seed}", make)


def task_a(centres: np.ndarray) -> np.ndarray:
    quadrant = (centres[:, :, 0] >= SIZE / 2) * 2 + (centres[:, :, 1] >= SIZE / 2)
    return (quadrant[:, 0] * 4 + quadrant[:, 1]).astype(np.int64)


def task_b(centres: np.ndarray) -> np.ndarray:
    return (np.linalg.norm(centres[:, 0] - (SIZE - 1) / 2, axis=1) < 4).astype(np.int64)


def fit(model: nn.Module, groups, x, y, steps: int, extra=None, seed: int = 0, ramp: int = 0) -> None:
    """Adam on batches of 64, minimising cross-entropy plus ``extra()`` weighted by
    ``min(1, step / ramp)``: a ViT trained from scratch sits at chance for a few hundred
    steps, and a complexity term at full weight meanwhile closes gates the task needs later."""
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if extra is not None:
            loss = loss + min(1.0, step / ramp if ramp else 1.0) * extra()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def accuracy(model: nn.Module, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description="fine-tune a frozen ViT backbone with lumos_fx gates, then cut")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lam", type=float, default=0.5)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, centres = blobs(6000, seed=0)
    x = torch.from_numpy(images)
    train, test = slice(0, 5000), slice(5000, None)
    ya, yb = torch.from_numpy(task_a(centres)), torch.from_numpy(task_b(centres))

    model = ViT(image=SIZE, patch=4, in_channels=3, n_classes=16, dim=48, depth=3, heads=4)
    fit(model, model.parameters(), x[train], ya[train], args.steps)
    print(f"pretrained on task A (quadrants of both blobs): test accuracy {accuracy(model, x[test], ya[test]):.3f}")

    model.head = nn.Linear(48, 2)  # the new task's head
    config = lumos_fx.Config(frozen=["patch_embed", "blocks"], lam=args.lam)
    wrapped = lumos_fx.instrument(model, (x[:8],), feature_names=["blob A", "blob B", "noise"], config=config)
    frozen = sum(p.numel() for p in wrapped.parameters() if not p.requires_grad)
    print(f"fine-tuning on task B (is blob A near the centre) with {frozen:,} backbone weights frozen")
    fit(wrapped, lumos_fx.param_groups(wrapped, lr=2e-3), x[train], yb[train], args.steps,
        extra=lambda: lumos_fx.complexity_loss(wrapped))
    pruned = lumos_fx.prune(wrapped)
    print(f"task B test accuracy: gated {accuracy(wrapped, x[test], yb[test]):.3f}, "
          f"pruned {accuracy(pruned, x[test], yb[test]):.3f}")
    print(lumos_fx.summary(pruned))


if __name__ == "__main__":
    main()
