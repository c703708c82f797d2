"""Ops over the spatial dims that treat each channel alone: pooling, upsampling, padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from .registry import REGISTRY, ModuleRule, Rule, Unsupported
from .structure import arg


def _suffix_dims(name: str) -> int | None:
    """1, 2 or 3 for names ending in 1d / 2d / 3d."""
    return int(name[-2]) if len(name) > 2 and name[-1] == "d" and name[-2] in "123" else None


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

    def __init__(self, uniform: bool = False) -> None:
        self.uniform = uniform

    def keeps_uniform(self, node: fx.Node, pc) -> bool:
        return self.uniform

    def spatial_dims(self, node: fx.Node, ndim: int, module: nn.Module | None) -> int:
        name = type(module).__name__ if module is not None else getattr(node.target, "__name__", str(node.target))
        return _suffix_dims(name) or ndim - 2

    def connect(self, node: fx.Node, an) -> None:
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

    def prune(self, node: fx.Node, pc):
        x = node.args[0]
        if pc.is_const(x):
            if self.keeps_uniform(node, pc) and pc.is_uniform(x):
                return pc.const(x)
            return pc.evaluate_at_example(node)
        return super().prune(node, pc)


class SpatialModule(Spatial, ModuleRule):
    pass


class Pad(Spatial):
    """``F.pad(x, pad, mode, value)``: pads the last ``len(pad) // 2`` dims."""

    def spatial_dims(self, node: fx.Node, ndim: int, module: nn.Module | None) -> int:
        return len(arg(node, 1, "pad")) // 2

    def keeps_uniform(self, node: fx.Node, pc) -> bool:
        return arg(node, 2, "mode", "constant") != "constant"


class AvgPool(Spatial):
    """``avg_pool1d/2d/3d``: the mean of a constant window is the constant, unless zero
    padding is counted in it or a divisor overrides the window size."""

    def keeps_uniform(self, node: fx.Node, pc) -> bool:
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


_MAX_POOLS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
              F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
              F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.adaptive_avg_pool1d,
              F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear)
_AVG_POOLS = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, torch.avg_pool1d)
_LP_POOLS = (F.lp_pool1d, F.lp_pool2d, F.lp_pool3d)
_UNIFORM_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
                    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
                    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
                    nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)
_AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_OTHER_MODULES = (nn.LPPool1d, nn.LPPool2d, nn.LPPool3d,
                  nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)
_PAD_MODULES = tuple(m for m in _UNIFORM_MODULES + _OTHER_MODULES if "Pad" in m.__name__)

REGISTRY.register(Spatial(uniform=True), *_MAX_POOLS)
REGISTRY.register(AvgPool(), *_AVG_POOLS)
REGISTRY.register(AvgPoolModule(), *_AVG_POOL_MODULES)
REGISTRY.register(Spatial(uniform=False), *_LP_POOLS)  # (sum c^p)^(1/p) over a window is not c
REGISTRY.register(SpatialModule(uniform=True), *(m for m in _UNIFORM_MODULES if m not in _PAD_MODULES))
REGISTRY.register(SpatialModule(uniform=False), *(m for m in _OTHER_MODULES if m not in _PAD_MODULES))
REGISTRY.register(PadModule(uniform=True), *(m for m in _UNIFORM_MODULES if m in _PAD_MODULES))
REGISTRY.register(PadModule(uniform=False), *(m for m in _OTHER_MODULES if m in _PAD_MODULES))
REGISTRY.register(Pad(), F.pad)
