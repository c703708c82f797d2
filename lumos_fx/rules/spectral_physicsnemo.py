"""NVIDIA PhysicsNeMo's ``SpectralConv1d`` to ``SpectralConv4d`` (its FNO): the rule of
:mod:`lumos_fx.rules.spectral` on their weights ``weights1``, ``weights2``, ... (one per
corner of the retained modes, each (in, out, modes..., 2) as real and imaginary parts)."""

from __future__ import annotations

from physicsnemo.nn.module import spectral_layers
from torch import nn

from .registry import REGISTRY
from .spectral import SpectralConvRule


class PhysicsNemoSpectralConv(SpectralConvRule):
    def weights(self, module: nn.Module):
        return [p for name, p in module.named_parameters(recurse=False) if name.startswith("weights")]


REGISTRY.register(PhysicsNemoSpectralConv(), *(getattr(spectral_layers, f"SpectralConv{d}d") for d in (1, 2, 3, 4)))
