"""Convolutions: Conv1d/2d/3d and ConvTranspose1d/2d/3d, with any ``groups``."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import fx, nn

from .api import LIVE, Connecting, FoldedCall, ModuleRule, Outcome, Pruning, const
from .registry import REGISTRY

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ConvRule(ModuleRule):
    r"""``y[o] = b[o] + \sum_{i \in g(o)} W[o, i - g(o) C_{in}/G] \star x[i]``, channels at dim 1.

    ``Conv``'s weight is (out, in/G, *k); ``ConvTranspose``'s is (in, out/G, *k).

    With ``groups = 1`` input channel ``i`` is tied to the weight's input dim and output
    channel ``o`` to its output dim and to ``b[o]``; a gate ``z`` on the input folds into the
    weight exactly, ``W \star (z \odot x) = (W \operatorname{diag} z) \star x``.

    With ``groups = G > 1`` the weight's per-group dim is shared by all groups, so a single
    channel cannot be sliced out of it. The input and output channels of conv group ``g``
    are tied into one unit instead: channels go in whole conv groups (a depthwise conv
    removes input channel ``c`` with its output channels), ``groups`` shrinks with them, and
    the gate, constant over a conv group, folds into the weight's full (un-shared) dim.

    With every input channel closed the layer is the constant ``b``.
    """

    channels_at = 1

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        transposed = isinstance(module, _TRANSPOSED)
        grouped = module.groups > 1
        n_spatial = len(module.kernel_size)
        out = an.new_space(node, -n_spatial - 1, producer=True)
        if module.bias is not None:
            an.tie(out, an.param_space(module.bias, 0))
        # The weight dims that index every channel (the per-group dim of a grouped conv does not).
        w_in = an.param_space(module.weight, 0 if transposed else 1) if transposed or not grouped else None
        w_out = an.param_space(module.weight, 1 if transposed else 0) if not (transposed and grouped) else None
        if w_out is not None:
            an.tie(out, w_out)
        x = node.args[0]
        space = an.space(x)
        if space is None or space.dim != len(an.shape(x)) - n_spatial - 1:
            reason = f"{an.describe(node)} reads its channels on dim -{n_spatial + 1}"
            for s in (space, w_in):
                if s is not None:
                    an.block(s, reason)
            if w_out is None:
                an.block(out, f"{an.describe(node)} has groups and an input whose channels are kept")
            return
        if not grouped:
            an.tie(space, w_in)
            an.consume(node, x, fold=[w_in])
            return
        g = module.groups
        in_pg, out_pg = module.in_channels // g, module.out_channels // g
        c_in, c_out = np.arange(module.in_channels), np.arange(module.out_channels)
        # Every input channel of conv group k to its first output channel, every output
        # channel to its first input channel: one unit per conv group.
        an.tie(space, out, c_in, (c_in // in_pg) * out_pg)
        an.tie(space, out, (c_out // out_pg) * in_pg, c_out)
        if transposed:
            an.tie(space, w_in)
        an.consume(node, x, fold=[w_in if transposed else w_out])

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        module = pc.module(node)
        x = node.args[0]
        if pc.is_empty(x):
            bias = module.bias if module.bias is not None else module.weight.new_zeros(module.out_channels)
            return const(pc.broadcast_form(node, bias.detach()))
        if pc.is_const(x):
            if self.keeps_uniform(module) and pc.is_uniform(x):
                # Every output position sees a full window of the per-channel constant:
                # one position, computed on one window, holds at any input size.
                window = [d * (k - 1) + 1 for d, k in zip(module.dilation, module.kernel_size)]
                value = pc.const(x).expand(1, -1, *window)
                conv = getattr(F, f"conv{len(window)}d")
                return const(conv(value, module.weight, module.bias, 1, 0, module.dilation, module.groups).detach())
            return const(pc.evaluate_at_example(node))
        return LIVE

    def folded(self, module) -> FoldedCall | None:
        if isinstance(module, _TRANSPOSED) or module.groups != 1 or module.padding_mode != "zeros":
            return None  # a grouped weight's dim 1 is not the input's channels; padding modes pad first
        function = getattr(F, f"conv{len(module.kernel_size)}d")
        return FoldedCall(function, (module.stride, module.padding, module.dilation, module.groups))

    def keeps_uniform(self, module) -> bool:
        """A conv (not transposed) maps an input constant over space to an output constant over
        space unless zero padding reaches into it."""
        if isinstance(module, _TRANSPOSED):
            return False
        no_padding = module.padding == "valid" or (not isinstance(module.padding, str) and not any(module.padding))
        return no_padding or module.padding_mode != "zeros"

    def resize(self, module) -> None:
        transposed = isinstance(module, _TRANSPOSED)
        in_pg, out_pg = module.in_channels // module.groups, module.out_channels // module.groups
        if module.groups == 1:
            w0, w1 = module.weight.shape[:2]
            module.in_channels, module.out_channels = (w0, w1) if transposed else (w1, w0)
        elif transposed:
            module.groups = module.weight.shape[0] // in_pg
            module.in_channels = module.weight.shape[0]
            module.out_channels = module.weight.shape[1] * module.groups
        else:
            module.groups = module.weight.shape[0] // out_pg
            module.out_channels = module.weight.shape[0]
            module.in_channels = module.weight.shape[1] * module.groups


    def source(self, module) -> str:
        # torch's repr prints padding_mode unquoted; write every argument explicitly.
        args = [f"{module.in_channels}, {module.out_channels}, kernel_size={module.kernel_size}",
                f"stride={module.stride}", f"padding={module.padding!r}", f"dilation={module.dilation}",
                f"groups={module.groups}", f"bias={module.bias is not None}", f"padding_mode={module.padding_mode!r}"]
        if isinstance(module, _TRANSPOSED):
            args.insert(3, f"output_padding={module.output_padding}")
        return f"nn.{type(module).__name__}({', '.join(args)})"


REGISTRY.register(ConvRule(), *_CONVS, *_TRANSPOSED)
