"""Burgers: a Fourier neural operator (neuraloperator's FNO) mapping u(x, 0) to u(x, 1) (R^2)."""

from __future__ import annotations

from torch import nn

from ..workload import Scale, Workload, image_task, mse_loss
from . import data


def fno(scale: Scale) -> nn.Module:
    """neuraloperator's FNO with dense spectral weights, its hidden width 32 x the scale's
    width and ``size // 4`` Fourier modes (at most 16), no positional embedding of its own:
    the grid coordinate is an input channel. neuraloperator is imported here, so the rest of
    the zoo runs without it."""
    from neuralop.models import FNO

    return FNO(n_modes=(min(16, scale.size // 4),), in_channels=len(data.CHANNELS), out_channels=1,
               hidden_channels=max(8, round(32 * scale.width)), n_layers=4, positional_embedding=None)


SCALES = {
    "smoke": Scale(samples=64, steps=10, batch=16, width=0.5, size=32),
    "cpu": Scale(samples=2000, steps=1000, batch=32, size=64),
    "gpu": Scale(samples=10_000, steps=10_000, batch=64, width=2.0, size=128),
}

WORKLOAD = Workload(
    "burgers", "FNO", "R^2",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch, data.CHANNELS),
    lambda task, scale: fno(scale), mse_loss, SCALES, lr=2e-3, target=0.25,
    informative=tuple(data.INFORMATIVE), uninformative=tuple(data.UNINFORMATIVE))
