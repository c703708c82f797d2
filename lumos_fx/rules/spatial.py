"""Ops over the spatial dims that treat each channel alone: pooling, upsampling, padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from .api import Connecting, ModuleRule, Outcome, Pruning, Rule, Unsupported, arg, const
from .registry import REGISTRY


class Spatial(Rule):
    r"""``y[:, c] = f(x[:, c])`` where ``f`` acts on the trailing spatial dims (max / avg /
    adaptive / LP pooling, interpolate, pad).

    The channel dim must lie before the dims ``f`` acts on; output channel ``c`` is input
    channel ``c``. ``uniform`` says that ``f`` maps a tensor constant over space to the same
    constant (max and adaptive pooling, interpolation, edge-replicating pads): a branch that
    became a per-channel constant then stays one at any input size. Otherwise the constant
    is recomputed at the example input's size.
    """

    channels_at = 1

    def __init__(self, uniform: bool = False, dims: int | None = None) -> None:
        self.uniform, self.dims = uniform, dims  # dims: how many trailing dims it acts on (None: all but 2)

    def keeps_uniform(self, node: fx.Node, pc: Pruning) -> bool:
        return self.uniform

    def spatial_dims(self, node: fx.Node, ndim: int, module: nn.Module | None) -> int:
        return self.dims or ndim - 2

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        shape, out_shape = an.shape(x), an.shape(node)
        module = an.module(node) if node.op == "call_module" else None
        k = self.spatial_dims(node, len(shape), module)
        if out_shape is None or len(out_shape) != len(shape):
            raise Unsupported("returns more than one tensor, or changes the number of dims")
        if src.dim >= len(shape) - k:
            raise Unsupported(f"acts on the last {k} dims, which include the channel dim {src.dim}")
        an.follow(node, src, src.dim)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if pc.is_const(x):
            if self.keeps_uniform(node, pc) and pc.is_uniform(x):
                return const(pc.const(x))
            return const(pc.evaluate_at_example(node))
        return super().prune(node, pc)


class SpatialModule(Spatial, ModuleRule):
    pass


class Pad(Spatial):
    """``F.pad(x, pad, mode, value)``: pads the last ``len(pad) // 2`` dims."""

    def spatial_dims(self, node: fx.Node, ndim: int, module: nn.Module | None) -> int:
        return len(arg(node, 1, "pad")) // 2

    def keeps_uniform(self, node: fx.Node, pc: Pruning) -> bool:
        return arg(node, 2, "mode", "constant") != "constant"


class AvgPool(Spatial):
    """``avg_pool1d/2d/3d``: the mean of a constant window is the constant, unless zero
    padding is counted in it or a divisor overrides the window size."""

    def keeps_uniform(self, node: fx.Node, pc: Pruning) -> bool:
        if node.op == "call_module":
            m = pc.module(node)
            padding, count_pad, divisor = m.padding, m.count_include_pad, getattr(m, "divisor_override", None)
        else:
            padding, count_pad = arg(node, 3, "padding", 0), arg(node, 5, "count_include_pad", True)
            divisor = arg(node, 6, "divisor_override", None)
        no_padding = not any(padding) if isinstance(padding, (tuple, list)) else not padding
        return divisor is None and (no_padding or not count_pad)


class AvgPoolModule(AvgPool, ModuleRule):
    pass


class PadModule(SpatialModule):
    """``nn.ZeroPad2d``, ``nn.ReflectionPad1d`` ...: pad the last ``len(padding) // 2`` dims."""

    def spatial_dims(self, node: fx.Node, ndim: int, module: nn.Module | None) -> int:
        return len(module.padding) // 2


# By the number of trailing dims they act on (None: every dim after batch and channels).
_UNIFORM_FUNCTIONS = {
    1: (F.max_pool1d, torch.max_pool1d, F.adaptive_max_pool1d, F.adaptive_avg_pool1d, torch.adaptive_avg_pool1d),
    2: (F.max_pool2d, torch.max_pool2d, F.adaptive_max_pool2d, F.adaptive_avg_pool2d),
    3: (F.max_pool3d, torch.max_pool3d, F.adaptive_max_pool3d, F.adaptive_avg_pool3d),
    None: (F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear),
}
_AVG_POOLS = {1: (F.avg_pool1d, torch.avg_pool1d), 2: (F.avg_pool2d,), 3: (F.avg_pool3d,)}
_LP_POOLS = {1: (F.lp_pool1d,), 2: (F.lp_pool2d,), 3: (F.lp_pool3d,)}
_UNIFORM_MODULES = {
    1: (nn.MaxPool1d, nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d),
    2: (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d),
    3: (nn.MaxPool3d, nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool3d),
    None: (nn.Upsample,),
}
_AVG_POOL_MODULES = {1: (nn.AvgPool1d,), 2: (nn.AvgPool2d,), 3: (nn.AvgPool3d,)}
_LP_POOL_MODULES = {1: (nn.LPPool1d,), 2: (nn.LPPool2d,), 3: (nn.LPPool3d,)}
# Edge-replicating pads keep a constant constant; zero and constant pads do not.
_UNIFORM_PADS = (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
                 nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)
_OTHER_PADS = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)

for _dims in (1, 2, 3, None):
    REGISTRY.register(Spatial(uniform=True, dims=_dims), *_UNIFORM_FUNCTIONS[_dims])
    REGISTRY.register(SpatialModule(uniform=True, dims=_dims), *_UNIFORM_MODULES[_dims])
for _dims in (1, 2, 3):
    REGISTRY.register(AvgPool(dims=_dims), *_AVG_POOLS[_dims])
    REGISTRY.register(AvgPoolModule(dims=_dims), *_AVG_POOL_MODULES[_dims])
    # (sum c^p)^(1/p) over a window is not c
    REGISTRY.register(Spatial(uniform=False, dims=_dims), *_LP_POOLS[_dims])
    REGISTRY.register(SpatialModule(uniform=False, dims=_dims), *_LP_POOL_MODULES[_dims])
REGISTRY.register(PadModule(uniform=True), *_UNIFORM_PADS)
REGISTRY.register(PadModule(uniform=False), *_OTHER_PADS)
REGISTRY.register(Pad(), F.pad)
