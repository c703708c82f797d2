r"""Fourier layers (the spectral convolution of FNOs) as one op each:

.. math::
    y = \mathcal{F}^{-1}\!\big(\hat y\big) + b, \qquad
    \hat y_{o,k} = \sum_i W_{i,o,k}\, (\mathcal{F} x)_{i,k} \quad (k \text{ in the retained modes}),

linear in the input channel by channel: the FFT acts on each channel alone, so a gate
:math:`z_i` on input channel :math:`i` folds exactly into :math:`W_{i,\cdot,\cdot}` of every
spectral weight (a real scale commutes with the transform), and output channel :math:`o` owns
:math:`W_{\cdot,o,\cdot}` and :math:`b_o`. Closing channels cuts an FNO's hidden width; the
retained Fourier modes are untouched. A library's layer is a subclass that names its weights
(:mod:`lumos_fx.rules.spectral_neuralop`, :mod:`lumos_fx.rules.spectral_physicsnemo`);
``export`` writes the layer out as the torch code it runs.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .api import LEAF, Connecting, ModuleRule, Outcome, Pruning, Tracing, Unsupported, arg, const
from .linear import consume_channels


class SpectralConvRule(ModuleRule):
    channels_at = 1

    def weights(self, module: nn.Module) -> list[torch.Tensor]:
        """The spectral weights, each of shape (in, out, modes...)."""
        raise NotImplementedError

    def bias(self, module: nn.Module) -> torch.Tensor | None:
        """The bias, one value per output channel (maybe with unit dims), or None."""
        return None

    def refused(self, module: nn.Module) -> str | None:
        """Why this layer keeps its channels, or None."""
        return None

    def tracing(self, module: nn.Module) -> Tracing:
        return LEAF

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        why = self.refused(module)
        if why is not None:
            raise Unsupported(why)
        out = an.new_space(node, 1, producer=True)
        for weight in self.weights(module):
            an.tie(out, an.param_space(weight, 1))
        if self.bias(module) is not None:
            an.tie(out, an.param_space(self.bias(module), 0))
        consume_channels(node, arg(node, 0, "x"), [an.param_space(w, 0) for w in self.weights(module)], an, dim=1)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        module = pc.module(node)
        if pc.is_empty(arg(node, 0, "x")):  # the transform of nothing: the bias, everywhere
            bias = self.bias(module)
            vector = bias.reshape(-1) if bias is not None else self.weights(module)[0].real.new_zeros(
                self.weights(module)[0].shape[1])
            return const(pc.broadcast_form(node, vector.detach()))
        return pc.materialize_dead_inputs(node)

    def resize(self, module: nn.Module) -> None:
        if self.refused(module) is None:
            module.in_channels, module.out_channels = self.weights(module)[0].shape[:2]
