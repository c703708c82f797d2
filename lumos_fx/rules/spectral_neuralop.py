"""neuraloperator's ``SpectralConv`` (FNO, TFNO, their blocks): the rule of
:mod:`lumos_fx.rules.spectral` on its weight, dense or factorised (Tucker, CP, tensor train:
the channel rows of the factors are sliced, ranks and modes kept). A separable contraction,
:math:`\\hat y_{c,k} = W_{c,k} (\\mathcal{F} x)_{c,k}`, keeps each output channel with its
input channel, as a per-channel layer does. Complex data keeps its channels, with the reason."""

from __future__ import annotations

import copy

import torch
from neuralop.layers.spectral_convolution import SpectralConv, _contract_dense, _contract_dense_separable
from torch import nn

from .registry import REGISTRY
from .spectral import SpectralConvRule


def _mode_rows(weight: nn.Module, mode: int) -> tuple[torch.Tensor, int]:
    """The tensor and dim of tltorch factorised `weight` that hold the indices of its `mode`."""
    kind = type(weight).__name__
    if kind == "DenseTensor":
        return weight.tensor, mode
    return weight.factors[mode], 1 if kind == "TTTensor" else 0  # a TT core is (rank, size, rank)


def _dense(kind: str, weight: nn.Module) -> torch.Tensor:
    r"""The full tensor of a tltorch weight of class `kind`, as one einsum: Tucker
    :math:`G \times_k U^{(k)}`, CP :math:`\sum_r \lambda_r \bigotimes_k U^{(k)}_{:,r}`, a tensor
    train :math:`G^{(1)} G^{(2)} \cdots` contracted over its ranks."""
    factors = list(weight.factors)
    letters = "abcdefghijklmnopqrstuvwxyz"
    modes, ranks = letters[:len(factors)], letters[len(factors):]
    if kind == "TuckerTensor":
        terms = [ranks[:len(factors)]] + [m + r for m, r in zip(modes, ranks)]
        return torch.einsum(f"{','.join(terms)}->{modes}", weight.core, *factors)
    if kind == "CPTensor":
        r = ranks[0]
        return torch.einsum(f"{r},{','.join(m + r for m in modes)}->{modes}", weight.weights, *factors)
    # core k of a tensor train is (r_k, n_k, r_{k+1}), with r_0 = r_d = 1
    terms = [ranks[k] + modes[k] + ranks[k + 1] for k in range(len(factors))]
    return torch.einsum(f"{','.join(terms)}->{ranks[0]}{modes}{ranks[len(factors)]}", *factors)[0, ..., 0]


class _Reconstructed(nn.Module):
    """A factorised weight indexed through its full tensor, for export: tltorch's own indexing
    builds a factorised tensor of its inputs, which fx cannot trace. It holds the weight's
    parameters under their names, so the exported state is the factors, not the full tensor."""

    def __init__(self, weight: nn.Module) -> None:
        super().__init__()
        self.kind = type(weight).__name__
        for name, tensor in weight.named_parameters(recurse=False):
            self.register_parameter(name, tensor)
        for name, tensor in weight.named_buffers(recurse=False):
            self.register_buffer(name, tensor)
        self.factors = weight.factors

    def __getitem__(self, indices):
        return _dense(self.kind, self)[indices]


class NeuralopSpectralConv(SpectralConvRule):
    def channel_dims(self, module: SpectralConv):
        ins = [_mode_rows(module.weight, 0)]
        return ins, ins if module.separable else [_mode_rows(module.weight, 1)]

    def bias(self, module: SpectralConv):
        return module.bias

    def refused(self, module: SpectralConv) -> str | None:
        return "complex data is kept whole" if module.complex_data else None

    def separable(self, module: SpectralConv) -> bool:
        return module.separable

    def resize(self, module: nn.Module) -> None:
        super().resize(module)
        weight = module.weight
        shape = list(weight.shape)
        for mode in (0,) if module.separable else (0, 1):
            tensor, dim = _mode_rows(weight, mode)
            shape[mode] = tensor.shape[dim]
        weight.shape = tuple(shape)  # tltorch keeps the full shape beside its factors

    def traceable(self, module: SpectralConv) -> nn.Module:
        if type(module.weight).__name__ == "DenseTensor":
            return module
        twin = copy.copy(module)
        twin._modules = dict(module._modules, weight=_Reconstructed(module.weight))
        twin._contract = _contract_dense_separable if module.separable else _contract_dense
        return twin


REGISTRY.register(NeuralopSpectralConv(), SpectralConv)
