"""Element-wise ops: channel i of the output depends on channel i of the inputs only."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .api import (LIVE, Connecting, HeadRole, ModuleRule, Outcome, Pruning, Rule, Unsupported, const, shape_of,
    target_name)
from .registry import REGISTRY


class Elementwise(Rule):
    """``y = f(x)`` applied per element (activations, dropout, math, casts).

    The output's channels are the input's. Extra tensor arguments are not element-wise
    data of this rule (``clamp(x, min=t)`` ties ``t``'s channels too), so they are refused.
    """

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        extra = [a for a in list(node.args[1:]) + list(node.kwargs.values()) if an.space(a) is not None]
        if extra:
            raise Unsupported("takes a second tensor argument")
        if an.shape(node) != an.shape(x):
            raise Unsupported("changes the shape of its input")
        an.follow(node, src, src.dim)

    def head_role(self, node: fx.Node) -> HeadRole | None:
        return HeadRole.MOVE if target_name(node) == "contiguous" else None

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        if pc.is_const(node.args[0]):
            return const(pc.evaluate(node))
        return super().prune(node, pc)


class Cast(Elementwise):
    """``x.to(other)``, ``x.type_as(other)``: ``other`` is read for its dtype and device only."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        for a in list(node.args[1:]) + list(node.kwargs.values()):
            if an.space(a) is not None:
                an.accept(an.space(a))
        x = node.args[0]
        if an.space(x) is not None:
            an.follow(node, an.space(x), an.space(x).dim)


class ElementwiseModule(Elementwise, ModuleRule):
    """Module form of :class:`Elementwise` (``nn.ReLU``, ``nn.Dropout``, ...)."""


class PReLURule(ElementwiseModule):
    """``nn.PReLU``: one slope per channel (sliced with the channel) or one for all."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        super().connect(node, an)
        module = an.module(node)
        out = an.space(node)
        if out is not None and module.num_parameters > 1:
            if out.dim != min(1, len(an.shape(node)) - 1):
                raise Unsupported("PReLU slopes apply to dim 1, not the channel dim")
            an.tie(out, an.param_space(module.weight, 0))

    def resize(self, module: nn.PReLU) -> None:
        module.num_parameters = module.weight.shape[0]

    def source(self, module: nn.PReLU) -> str:
        return f"nn.PReLU({module.num_parameters})"


class Broadcast(Rule):
    """Binary element-wise ops with broadcasting (``+ - * /``, maximum, minimum, comparisons,
    ``masked_fill``).

    Operands are right-aligned. Each operand whose channels line up with the output's is
    tied to it (a residual add joins two groups). An operand of size 1 on the output's
    channel dim (a ``(B, 1)`` scale, a scalar) does not couple channels; its own single
    channel is read by all, so it is kept. Python scalars and 0-dim tensors are constants.
    """

    def connect(self, node: fx.Node, an: Connecting) -> None:
        out_shape = an.shape(node)
        if not out_shape:
            return
        n_out = len(out_shape)
        operands = [a for a in list(node.args) + list(node.kwargs.values()) if an.space(a) is not None]
        aligned = {}
        for a in operands:
            space = an.space(a)
            pos = space.dim + n_out - len(an.shape(a))
            if space.size == out_shape[pos] and (space.size > 1 or out_shape[pos] == 1):
                aligned[a] = pos
        # Operands of the output's full shape say where its channels are; a smaller operand
        # (a (1, 1, H, W) mask) may have its own channels elsewhere and broadcast over these.
        positions = {p for a, p in aligned.items() if an.shape(a) == tuple(out_shape)} or set(aligned.values())
        if len(positions) != 1:
            raise Unsupported("operands carry channels on different dims")
        (pos,) = positions
        out = an.new_space(node, pos)
        for a in operands:
            shape = an.shape(a)
            size_at_pos = shape[pos - n_out + len(shape)] if pos - n_out + len(shape) >= 0 else 1
            if aligned.get(a) == pos:
                an.tie(an.space(a), out)
            elif size_at_pos == 1:
                an.block(an.space(a), f"broadcast over the channels of {an.describe(node)}")
            else:
                raise Unsupported("an operand varies along the output's channels on a dim that is not its channel dim")

    def head_role(self, node: fx.Node) -> HeadRole | None:
        """``s * q``, ``q * s`` and ``q / s`` for a Python number ``s`` scale the heads."""
        if node.op != "call_function" or node.target not in (operator.mul, operator.truediv, torch.mul):
            return None
        a, b = node.args[:2]
        if isinstance(a, fx.Node) and isinstance(b, (int, float)):
            return HeadRole.SCALE
        return HeadRole.SCALE if node.target is not operator.truediv and isinstance(a, (int, float)) \
            and isinstance(b, fx.Node) else None

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        args = [a for a in node.all_input_nodes if pc.space(a) is not None]
        # Every input, channels or not (a live scalar like x.mean()), must be static to fold.
        if all(pc.is_static(a) for a in node.all_input_nodes) and any(pc.is_const(a) for a in args):
            return const(pc.evaluate(node))
        out_shape = shape_of(node)
        full_live = any(pc.is_live(a) and shape_of(a) == out_shape for a in args)
        for a in args:
            if pc.is_const(a):
                # A constant in broadcast form broadcasts exactly as the original operand did
                # when a live operand already has the output's shape.
                pc.replace_input(node, a, pc.const_attr(a, node) if full_live else pc.materialize(a, node))
        return LIVE


_ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Mish, nn.ELU, nn.CELU, nn.SELU,
    nn.LeakyReLU, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink,
    nn.LogSigmoid, nn.Softshrink, nn.Hardshrink, nn.Identity, nn.Dropout, nn.AlphaDropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout,
)
_ELEMENTWISE_FUNCTIONS = (
    F.relu, F.relu6, F.gelu, F.tanh, F.sigmoid, F.silu, F.mish, F.elu, F.celu, F.selu, F.leaky_relu,
    F.softplus, F.softsign, F.hardtanh, F.hardswish, F.hardsigmoid, F.logsigmoid, F.tanhshrink,
    F.dropout, F.alpha_dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.feature_alpha_dropout,
    F.relu_, F.elu_, F.celu_, F.selu_, F.leaky_relu_, F.hardtanh_,  # in place (AttentiveFP): the same maps
    torch.relu, torch.tanh, torch.sigmoid, torch.exp, torch.log, torch.log1p, torch.expm1, torch.sin,
    torch.cos, torch.abs, torch.sqrt, torch.rsqrt, torch.square, torch.neg, torch.clamp, torch.clip,
    torch.real, torch.imag, torch.conj,  # of each complex entry alone (a Fourier layer written by hand)
    torch.erf, torch.sign, torch.reciprocal, torch.nan_to_num, operator.neg, operator.pos,
    # New tensors shaped as their input (noise injection: x + 0.1 * torch.randn_like(x)).
    torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like,
)
_ELEMENTWISE_METHODS = (
    "relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "exp", "log", "log1p", "expm1", "sin", "cos",
    "abs", "sqrt", "rsqrt", "square", "neg", "clamp", "clamp_", "clip", "erf", "sign", "reciprocal",
    "nan_to_num", "contiguous", "clone", "detach", "float", "double", "half", "bfloat16",
)

REGISTRY.register(ElementwiseModule(), *_ACTIVATION_MODULES)
REGISTRY.register(PReLURule(), nn.PReLU)
REGISTRY.register(Elementwise(), *_ELEMENTWISE_FUNCTIONS, *_ELEMENTWISE_METHODS)
REGISTRY.register(Cast(), "to", "type_as")
# ``x ** 2`` and ``x.pow(2)``: element-wise when the exponent is a number.
REGISTRY.register(Elementwise(), operator.pow, torch.pow, "pow")
REGISTRY.register(
    Broadcast(),
    operator.add, operator.sub, operator.mul, operator.truediv,
    torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
    "add", "sub", "mul", "div", "maximum", "minimum", "add_", "sub_", "mul_", "div_",
    # Comparisons, and a fill where a mask of the same channels says (PyG's std aggregation:
    # out.masked_fill(out <= eps, 0.0)).
    operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne,
    torch.lt, torch.le, torch.gt, torch.ge, torch.eq, torch.ne, "lt", "le", "gt", "ge", "eq", "ne", "masked_fill",
)
