"""A small trainer for an instrumented model, for those without a training loop of their own."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import fx
from tqdm.auto import tqdm

from .budget import BUDGET, Budget, budget_of
from .complexity import complexity_loss, expected_kept, param_groups
from .errors import InputError
from .instrument import plan_of


def fit(wrapped: fx.GraphModule, loader, loss_fn, *, epochs: int = 1, lr: float = 1e-3, weight_decay: float = 0.0,
        target: float | None = None, device=None, checkpoint=None, progress: bool = True) -> list[dict]:
    """Train `wrapped` on `loader` with Adam, the complexity term (or a budget) added to
    ``loss_fn(wrapped(*inputs), target)``; returns one record per epoch (mean task loss,
    complexity term, expected kept fraction).

    Args:
        wrapped: a model from :func:`lumos_fx.instrument`.
        loader: an iterable of ``(inputs, target)`` per step, ``inputs`` a tensor or a tuple
            of the forward's arguments (a ``torch.utils.data.DataLoader`` over pairs).
        loss_fn: ``loss_fn(output, target) -> scalar``.
        epochs: passes over `loader`.
        lr, weight_decay: the weights' Adam settings; the weights' learning rate follows a
            cosine from `lr` to 0 over the run, the gates' (``Config.gate_lr``) stays.
        target: keep this fraction of the prunable parameters (a budget, as
            ``Config(target_params=...)``; the target ramps down over the first quarter of
            the steps or ``Config.budget_warmup``, whichever is shorter).
        device: where to train (default: where the model is).
        checkpoint: a file: written after every epoch (model with gates and budget,
            optimizer, schedule, epoch, RNG states) and, when it exists, resumed from, so
            an interrupted run started again with the same arguments finishes as one that
            was never interrupted.
        progress: a tqdm bar with task loss, complexity and expected kept fraction.
    """
    plan = plan_of(wrapped)
    steps = epochs * len(loader)
    if target is not None:
        _attach_budget(wrapped, plan, target, steps)
    device = torch.device(device) if device is not None else next(wrapped.parameters()).device
    wrapped.to(device).train()
    opt = torch.optim.Adam(param_groups(wrapped, lr, weight_decay=weight_decay))
    cosine = [(lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))) if g["name"] == "weights"
              else (lambda s: 1.0) for g in opt.param_groups]
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        start, history = _resume(Path(checkpoint), wrapped, opt, schedule)
    for epoch in range(start, epochs):
        sums = {"loss": 0.0, "complexity": 0.0}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            inputs, y = batch
            inputs = tuple(t.to(device) for t in (inputs if isinstance(inputs, (tuple, list)) else (inputs,)))
            loss = loss_fn(wrapped(*inputs), y.to(device))
            term = complexity_loss(wrapped)
            opt.zero_grad(set_to_none=True)
            (loss + term).backward()
            opt.step()
            schedule.step()
            sums["loss"] += loss.item()
            sums["complexity"] += term.item()
            if progress:  # the kept fraction costs a pass over the cost model
                bar.set_postfix(loss=f"{loss.item():.4g}", complexity=f"{term.item():.3g}",
                                kept=f"{_kept(wrapped):.1%}")
        history.append({"epoch": epoch + 1, **{k: v / max(1, len(loader)) for k, v in sums.items()},
                        "kept": _kept(wrapped)})
        if checkpoint is not None:
            _save(Path(checkpoint), epoch + 1, history, wrapped, opt, schedule)
    wrapped.eval()
    return history


def _kept(wrapped) -> float:
    with torch.no_grad():
        return float(expected_kept(wrapped))


def _attach_budget(wrapped, plan, target: float, steps: int) -> None:
    budget = budget_of(wrapped)
    if budget is not None:
        if budget.target != target:
            raise InputError(f"the model was instrumented with a budget of {budget.target}; fit(target={target}) "
                             "asks for another. Pass one of them, not both.")
        return
    plan.config = replace(plan.config, target_params=target,
                          budget_warmup=min(plan.config.budget_warmup, max(1, steps // 4)))
    wrapped.add_submodule(BUDGET, Budget(plan.config).to(next(wrapped.parameters()).device))


def _save(path: Path, epoch: int, history, wrapped, opt, schedule) -> None:
    state = {"epoch": epoch, "history": history, "model": wrapped.state_dict(), "optimizer": opt.state_dict(),
             "schedule": schedule.state_dict(), "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a run killed while saving keeps the previous checkpoint


def _resume(path: Path, wrapped, opt, schedule) -> tuple[int, list[dict]]:
    state = torch.load(path, weights_only=True)
    wrapped.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["epoch"], state["history"]
