"""neuraloperator's ``SpectralConv`` (FNO, TFNO, their blocks): the rule of
:mod:`lumos_fx.rules.spectral` on its dense weight. Factorised weights (Tucker, CP,
tensor-train), a separable contraction (one weight per channel, in and out tied) and complex
data keep their channels, with the reason."""

from __future__ import annotations

from neuralop.layers.spectral_convolution import SpectralConv
from torch import nn

from .registry import REGISTRY
from .spectral import SpectralConvRule


class NeuralopSpectralConv(SpectralConvRule):
    def weights(self, module: SpectralConv):
        return [module.weight.tensor]

    def bias(self, module: SpectralConv):
        return module.bias

    def refused(self, module: SpectralConv) -> str | None:
        if type(module.weight).__name__ != "DenseTensor":
            return f"its {module.factorization} factorised weight is kept whole"
        if module.separable:
            return "a separable contraction ties each input channel to its output channel"
        if module.complex_data:
            return "complex data is kept whole"
        return None

    def resize(self, module: nn.Module) -> None:
        super().resize(module)
        if self.refused(module) is None:
            module.weight.shape = module.weight.tensor.shape  # tltorch's DenseTensor keeps its shape


REGISTRY.register(NeuralopSpectralConv(), SpectralConv)
