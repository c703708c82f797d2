"""NVIDIA PhysicsNeMo's ``SpectralConv1d`` to ``SpectralConv4d`` (its FNO): the rule of
:mod:`lumos_fx.rules.spectral` on their weights ``weights1``, ``weights2``, ... (one per
corner of the retained modes, each (in, out, modes..., 2) as real and imaginary parts).

AFNO's filter (``AFNO2DLayer``, ``ModAFNO2DLayer``) is one op that keeps its channels: its
block-diagonal complex MLP in Fourier space,
:math:`\hat y_b = W^{(2)}_b\, \sigma(W^{(1)}_b \hat x_b + b^{(1)}_b) + b^{(2)}_b` for each block
:math:`b` of the embedding, reads the embedding, which the LayerNorm in front of it couples
as a whole, and its hidden units are one width for every block."""

from __future__ import annotations

from physicsnemo.nn.module import afno_layers, spectral_layers
from torch import fx, nn

from .api import Connecting, ModuleRule, Unsupported
from .registry import REGISTRY
from .spectral import SpectralConvRule


class PhysicsNemoSpectralConv(SpectralConvRule):
    def weights(self, module: nn.Module):
        return [p for name, p in module.named_parameters(recurse=False) if name.startswith("weights")]


REGISTRY.register(PhysicsNemoSpectralConv(), *(getattr(spectral_layers, f"SpectralConv{d}d") for d in (1, 2, 3, 4)))


class AFNOFilter(ModuleRule):
    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("AFNO's block-diagonal spectral MLP is kept whole: it reads the embedding that the LayerNorm "
                          "before it couples, and its hidden width is shared by every block (no rule cuts it)")


REGISTRY.register(AFNOFilter(), afno_layers.AFNO2DLayer, afno_layers.ModAFNO2DLayer)
