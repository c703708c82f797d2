"""A plain training loop that every zoo workload shares, with or without lumos_fx."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

import lumos_fx

from . import distributed

DENSE = 0.2  # of a tolerance run's steps, trained with every gate open before the first validation
VALIDATIONS = 20  # after it


def column_stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1 for constant columns, which then map to 0)."""
    std = a.std(axis=0)
    return a.mean(axis=0), np.where(std > 1e-8, std, 1.0)


def standardized_mse(scale: torch.Tensor):
    """MSE in units of each target's standard deviation."""
    return lambda pred, target: torch.nn.functional.mse_loss(pred / scale, target / scale)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination, averaged uniformly over output columns."""
    ss_res = ((target - pred) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    return float((1 - ss_res / ss_tot).mean())


def fit(model: torch.nn.Module, draw: Callable[[torch.Generator], tuple[tuple, torch.Tensor]], *, steps: int,
        lr: float = 2e-3, seed: int = 0, loss_fn=torch.nn.functional.mse_loss, desc: str = "train",
        device: str = "cpu", search: lumos_fx.ToleranceSearch | None = None, finetune: float = 0.0) -> list[float]:
    """Adam with a cosine schedule on ``loss_fn(model(*inputs), target)`` for ``(inputs, target)
    = draw(generator)``. An instrumented model (from lumos_fx.instrument) also gets the
    complexity term and its gate parameter group, and nothing else changes. With a `device`
    other than the CPU the model trains there and comes back to the CPU at the end.

    Under ``torch.distributed`` (e.g. ``torchrun``) the model trains as
    DistributedDataParallel: every rank draws the same global batch and trains on its share
    (see :func:`shard`), so N ranks compute the step a single process computes on the whole
    batch, gate samples included (they are seeded per step, see lumos_fx.Gate).

    With a `search` (a tolerance instead of a budget), the model is validated at the end of
    a dense phase of :data:`DENSE` of the steps, then :data:`VALIDATIONS` times evenly over
    the rest, and the search's choice is loaded at the end.

    With `finetune`, the last fraction of the steps fine-tunes the cut model: the gates are
    frozen there (``lumos_fx.freeze_gates``; a search chooses first). A model instrumented
    with a teacher (``Config(distill=...)``) adds ``lumos_fx.distill_loss``."""
    if not any(p.requires_grad for p in model.parameters()):
        return []  # cut down to a constant: nothing left to train
    gated = isinstance(model, torch.fx.GraphModule) and "lumos" in model.meta
    params = lumos_fx.param_groups(model, lr) if gated else [{"params": model.parameters(), "lr": lr}]
    opt = torch.optim.Adam(params)
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    rank, world = distributed.rank_and_world()
    net = distributed.wrap(model, device)
    losses = []
    frozen_at = steps - round(finetune * steps) if gated and finetune else None
    searched = steps if frozen_at is None else frozen_at
    validated_at = {round(searched * (DENSE + (1 - DENSE) * k / VALIDATIONS)) for k in range(VALIDATIONS + 1)}
    distill = gated and model.meta["lumos"].config.distill is not None
    for step in tqdm(range(steps), desc=desc, mininterval=1.0, leave=False, disable=rank > 0):
        if step == frozen_at:
            if search is not None:
                search.finish()
            lumos_fx.freeze_gates(model, opt)
        inputs, target = distributed.shard(draw, gen, rank, world)
        if device != "cpu":
            inputs, target = tuple(t.to(device, non_blocking=True) for t in inputs), target.to(device)
        output = net(*inputs)
        loss = loss_fn(output, target)
        total = loss + lumos_fx.complexity_loss(model) if gated else loss
        if distill:
            total = total + lumos_fx.distill_loss(model, inputs, output)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        scale = 0.5 * (1 + math.cos(math.pi * step / steps))
        for group, lr0 in zip(opt.param_groups, base):
            group["lr"] = lr0 * (scale if group.get("name") != "gates" else 1.0)
        losses.append(loss.detach())
        if search is not None and step + 1 in validated_at:
            search.validated()
    if search is not None and search.chosen is None:
        search.finish()
    model.cpu().eval()
    return [float(v) for v in losses]


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch: int = 512,
          **kw) -> list[float]:
    """:func:`fit` on random mini-batches of the rows of `x` and `y`."""
    def draw(gen):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        return (x[idx],), y[idx]
    return fit(model, draw, steps=steps, **kw)
