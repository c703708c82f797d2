"""Pixel shuffle and unshuffle: channels traded for resolution (sub-pixel convolution)."""

from __future__ import annotations

import numpy as np
import torch
from torch import fx, nn

from .api import Connecting, ModuleRule, Outcome, Pruning, Rule, Unsupported, const
from .registry import REGISTRY


class PixelShuffle(Rule):
    r"""``pixel_shuffle(x, r)``, ``(*, C r^2, H, W) -> (*, C, H r, W r)``, and its inverse
    ``pixel_unshuffle(x, r)``, ``(*, C, H, W) -> (*, C r^2, H / r, W / r)``:

    .. math::
        \text{shuffle:}\quad y_{c,\; h r + i,\; w r + j} = x_{c r^2 + i r + j,\; h,\; w}, \qquad
        \text{unshuffle:}\quad y_{c r^2 + i r + j,\; h,\; w} = x_{c,\; h r + i,\; w r + j},

    for ``0 <= i, j < r``; the channels are at dim -3 (batched or not).

    **Units.** Shuffle output channel ``c`` is made of input channels ``c r^2 .. c r^2 + r^2 - 1``
    and of no other: input channel ``k`` is tied to output channel ``\lfloor k / r^2 \rfloor``,
    so output channel ``c`` and its ``r^2`` producer channels form one unit. Unshuffle is the
    mirror image: output channel ``o`` is tied to input channel ``\lfloor o / r^2 \rfloor``.
    With every unit kept or cut whole and in order, the kept input channels are whole blocks
    of ``r^2`` (shuffle) or whole channels (unshuffle), so ``op(x[kept_in]) = op(x)[kept_out]``:
    the op runs unchanged on the cut tensor, with the same ``r``, and has nothing to rewrite.

    **Constants.** A branch that became a per-channel constant ``x_k = v_k`` (constant over
    space) gives

    .. math::
        \text{shuffle:}\quad y_{c,\; h r + i,\; w r + j} = v_{c r^2 + i r + j}, \qquad
        \text{unshuffle:}\quad y_{o,\; h,\; w} = v_{\lfloor o / r^2 \rfloor}.

    Unshuffle's is constant over space again, valid at any size. Shuffle's tiles an
    ``r x r`` pattern over space: it is constant over space only when the ``r^2`` values
    of every kept unit are equal (then ``y_c = v_{c r^2}``; closed units are sliced away and
    their gates zero them in the next layer, so their values do not matter). Otherwise, and
    for a constant that already varies over space, the op runs on the constant at the
    example's size, which summary() reports.
    """

    channels_at = -3

    def __init__(self, shuffle: bool) -> None:
        self.shuffle = shuffle

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        shape, out_shape = an.shape(x), an.shape(node)
        if out_shape is None or len(shape) < 3 or src.dim != len(shape) - 3:
            raise Unsupported(f"trades the channels at dim -3 for space, and its input's channels are at "
                              f"dim {src.dim}")
        out = an.new_space(node, -3)
        if self.shuffle:
            k = np.arange(shape[-3])
            an.tie(src, out, k, k // (shape[-3] // out_shape[-3]))
        else:
            o = np.arange(out_shape[-3])
            an.tie(src, out, o // (out_shape[-3] // shape[-3]), o)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if not pc.is_const(x):
            return super().prune(node, pc)
        if pc.space(node) is not None and pc.is_uniform(x):
            v = pc.const(x).flatten()
            n_in, n_out = pc.space(x).size, pc.space(node).size
            v = v.expand(n_in)  # a constant broadcast over the channels too
            if not self.shuffle:
                return const(pc.broadcast_form(node, v.repeat_interleave(n_out // n_in)))
            blocks = v.reshape(n_out, n_in // n_out)
            kept = blocks[torch.as_tensor(pc.kept(pc.space(node)), dtype=torch.long, device=v.device)]
            if torch.equal(kept, kept[:, :1].expand_as(kept)):
                return const(pc.broadcast_form(node, blocks[:, 0]))
        return const(pc.evaluate_at_example(node))


class PixelShuffleModule(PixelShuffle, ModuleRule):
    """``nn.PixelShuffle(r)`` / ``nn.PixelUnshuffle(r)``: no size attributes to update, and their
    repr is their constructor call, so export's default source serves."""


# F.pixel_shuffle is torch.pixel_shuffle (and likewise unshuffle); Tensor has no such method.
REGISTRY.register(PixelShuffle(shuffle=True), torch.pixel_shuffle)
REGISTRY.register(PixelShuffle(shuffle=False), torch.pixel_unshuffle)
REGISTRY.register(PixelShuffleModule(shuffle=True), nn.PixelShuffle)
REGISTRY.register(PixelShuffleModule(shuffle=False), nn.PixelUnshuffle)
