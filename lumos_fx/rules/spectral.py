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

A factorised weight is a product whose factors carry the channel modes alone: Tucker,
:math:`W = G \times_1 U^{(1)} \times_2 U^{(2)} \cdots`, puts input channel :math:`i` in row
:math:`i` of :math:`U^{(1)}` and output channel :math:`o` in row :math:`o` of :math:`U^{(2)}`;
CP, :math:`W_{i,o,k} = \sum_r \lambda_r U^{(1)}_{ir} U^{(2)}_{or} \cdots`, likewise; a tensor
train, :math:`W_{i,o,k} = G^{(1)}_{:,i,:} G^{(2)}_{:,o,:} \cdots`, in the middle index of its
first and second cores. Slicing those rows slices :math:`W` on its channel modes exactly, and
the ranks and the other factors (the modes) stay as they are.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .api import LEAF, Connecting, ModuleRule, Outcome, Pruning, Rule, Tracing, Unsupported, arg, const, normalize_dim
from .linear import consume_channels
from .registry import REGISTRY


class SpectralConvRule(ModuleRule):
    channels_at = 1

    def weights(self, module: nn.Module) -> list[torch.Tensor]:
        """The dense spectral weights, each of shape (in, out, modes...)."""
        raise NotImplementedError

    def channel_dims(self, module: nn.Module) -> tuple[list[tuple[torch.Tensor, int]], list[tuple[torch.Tensor, int]]]:
        """The (tensor, dim) pairs that hold the input channels and those that hold the output
        channels: dims 0 and 1 of every dense weight, the channel rows of a factorised one's factors."""
        weights = self.weights(module)
        return [(w, 0) for w in weights], [(w, 1) for w in weights]

    def bias(self, module: nn.Module) -> torch.Tensor | None:
        """The bias, one value per output channel (maybe with unit dims), or None."""
        return None

    def refused(self, module: nn.Module) -> str | None:
        """Why this layer keeps its channels, or None."""
        return None

    def separable(self, module: nn.Module) -> bool:
        r"""Whether each output channel reads its own input channel alone,
        :math:`\hat y_{c,k} = W_{c,k} (\mathcal{F} x)_{c,k}` (in and out channels the same tensors)."""
        return False

    def tracing(self, module: nn.Module) -> Tracing:
        return LEAF

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        why = self.refused(module)
        if why is not None:
            raise Unsupported(why)
        ins, outs = self.channel_dims(module)
        x = arg(node, 0, "x")
        if self.separable(module):  # a per-channel layer: its channels are its input's
            src = an.space(x)
            if src is None:
                return
            if src.dim != 1:
                raise Unsupported(f"a separable spectral convolution reads dim 1, its input's channels are at dim "
                                  f"{src.dim}")
            out = an.follow(node, src, 1)
        else:
            out = an.new_space(node, 1, producer=True)
            consume_channels(node, x, [an.param_space(t, dim) for t, dim in ins], an, dim=1)
        for tensor, dim in outs:
            an.tie(out, an.param_space(tensor, dim))
        if self.bias(module) is not None:
            an.tie(out, an.param_space(self.bias(module), 0))

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        module = pc.module(node)
        if pc.is_empty(arg(node, 0, "x")):  # the transform of nothing: the bias, everywhere
            bias = self.bias(module)
            out, dim = self.channel_dims(module)[1][0]
            vector = bias.reshape(-1) if bias is not None else out.real.new_zeros(out.shape[dim])
            return const(pc.broadcast_form(node, vector.detach()))
        return pc.materialize_dead_inputs(node)

    def resize(self, module: nn.Module) -> None:
        if self.refused(module) is None:
            (w_in, d_in), (w_out, d_out) = (dims[0] for dims in self.channel_dims(module))
            module.in_channels, module.out_channels = w_in.shape[d_in], w_out.shape[d_out]


class FourierTransform(Rule):
    r"""The transforms of ``torch.fft`` (``fft``, ``rfft``, ``irfft``, ``hfft`` ..., their 2-D
    and n-D forms) and ``fftshift`` / ``ifftshift``, over dims other than the channels:

    .. math::
        y_{\dots, c, \dots} = \mathcal{F}\big(x_{\dots, c, \dots}\big),

    each channel transformed alone, linear, with :math:`\mathcal{F}(0) = 0`: output channel
    :math:`c` is input channel :math:`c`. A transform over the channel dim (``fftn`` with no
    ``dim`` and no ``s`` takes every dim) mixes them: refused."""

    def __init__(self, dim_at: int, default) -> None:
        self.dim_at, self.default = dim_at, default  # where `dim` is passed positionally, its default

    def connect(self, node: fx.Node, an: Connecting) -> None:
        src = an.space(node.args[0])
        if src is None:
            return
        ndim = len(an.shape(node.args[0]))
        dims = arg(node, self.dim_at, "dim", self.default)
        if dims is None:  # the n-D forms: the last len(s) dims, or every dim
            s = arg(node, 1, "s")
            dims = range(ndim - len(s), ndim) if s is not None else range(ndim)
        dims = {normalize_dim(d, ndim) for d in ([dims] if isinstance(dims, int) else dims)}
        if src.dim in dims or len(an.shape(node)) != ndim:
            raise Unsupported(f"transforms over dims {sorted(dims)}, which include the channel dim {src.dim}")
        an.follow(node, src, src.dim)


_KINDS = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")
REGISTRY.register(FourierTransform(2, -1), *(getattr(torch.fft, kind) for kind in _KINDS))
REGISTRY.register(FourierTransform(2, (-2, -1)), *(getattr(torch.fft, f"{kind}2") for kind in _KINDS))
REGISTRY.register(FourierTransform(2, None), *(getattr(torch.fft, f"{kind}n") for kind in _KINDS))
REGISTRY.register(FourierTransform(1, None), torch.fft.fftshift, torch.fft.ifftshift)
