r"""The whole contract between lumos_fx's engine and a rule.

A rule is the story of one layer or op, told to every stage through hooks:

===================  ==========================================================================
hook                 asked by, and what it answers
===================  ==========================================================================
``connect``          the channel analysis: how the op's output channels relate to its inputs'
                     (calls on :class:`Connecting`)
``prune``            the cut: how the node is rewritten once the masks are known (calls on
                     :class:`Pruning`; returns an :class:`Outcome`)
``emptied``          the cut, instead of ``prune``, when every channel of the node closed
``head_role``        the attention-head pass: what the op is on the path between a
                     projection and an attention (:class:`HeadRole`)
``attention``        the attention-head pass: the operands of an attention (:class:`Attention`)
``projection``       the attention-head pass: the weights of a linear map it starts or ends at
                     (:class:`Projection`)
``channels_at``      the input stage and gate folding: the dim a layer reads as channels (a
                     model input's feature dim; the dim a folded gate scales)
``tracing``          the tracer (module rules): call the module as one op, or enter it through
                     a function (:class:`Tracing`)
``write_out``        the tracer (module rules), after tracing: replace the call by the ops it
                     computes, so that other rules cut them
``folded``           gate insertion (module rules): the functional call whose weight an input
                     gate folds into during training (:class:`FoldedCall`)
``resize``           the cut (module rules): size attributes after the parameters were sliced
``source``           export (module rules): the Python expression that builds the module
===================  ==========================================================================

The stages implement :class:`Connecting` and :class:`Pruning`; a rule imports this module
(and :mod:`lumos_fx.rules.registry` to register itself) and nothing else of lumos_fx.
"""

from __future__ import annotations

import builtins
import enum
import importlib
import operator
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np
import torch
from torch import fx, nn
from torch.fx.node import map_arg

from ..channels import Space
from ..errors import PruneError, TraceError
from ..fxutil import describe, normalize_dim, shape_of, tensor_meta

__all__ = [
    "Attention", "Connecting", "EMPTY", "FoldedCall", "HeadRole", "LEAF", "LIVE", "METADATA_READS", "ModuleRule",
    "Outcome", "Projection", "PruneError", "Pruning", "Rule", "SizeRead", "Space", "Status", "TraceError", "Tracing",
    "Unsupported",
    "arg", "axes_read", "call_op", "channel_count_read", "check_read_counts", "const", "describe", "dims_indexed",
    "generic_module_source", "kept_in_range", "normalize_dim", "parameter_behind", "parameter_readers",
    "reads_count_of", "run_on", "run_op", "scales_by_number", "set_arg", "shape_of", "shape_query", "size_read",
    "target_name", "tensor_meta", "trace_through", "varargs",
]


class Unsupported(Exception):
    """Raised by :meth:`Rule.connect` when this use of the op has no rule; the message says why
    (summary() shows it, and the channels the op touches are kept)."""


# ---- what a prune hook returns -------------------------------------------------------------
class Status(enum.Enum):
    """What a node is in the cut model."""

    LIVE = "live"  # computed from the inputs, rewritten in place
    CONST = "const"  # no longer depends on the inputs: the branch becomes the constant it computes
    EMPTY = "empty"  # every channel closed: the node goes


@dataclass(frozen=True)
class Outcome:
    """The result of :meth:`Rule.prune`: the node's status and, for a constant, its value
    (a tensor in broadcast form, full channel width, or a tuple of them for a split)."""

    status: Status
    value: Any = None

    @property
    def live(self) -> bool:
        return self.status is Status.LIVE


LIVE = Outcome(Status.LIVE)
EMPTY = Outcome(Status.EMPTY)


def const(value) -> Outcome:
    """The node's value is the constant `value`: full channel width (closed channels are cut
    later), in broadcast form where the op keeps it (one value per channel, size 1 elsewhere)."""
    return Outcome(Status.CONST, value)


# ---- what a rule says to the attention-head pass ---------------------------------------------
class HeadRole(enum.Enum):
    """What an op is on the path between a projection and an attention (see :mod:`lumos_fx.head_dims`)."""

    SPLIT = "split"  # a reshape that splits channels into (heads, dims) or merges them back
    MOVE = "move"  # moves or picks dims without touching values: permute, transpose, x[i], unbind
    SCALE = "scale"  # multiplies the values by a Python number


class Attention(NamedTuple):
    """The operands of an attention ``softmax(s q k^T + M) v``: `key_dim` is the dim of `key`
    that holds the head dims (-1 for SDPA's k, -2 for a ``q @ k^T`` whose k was transposed);
    `loud` says whether summary() should tell why its head dims are kept (a batched product
    may not be an attention at all)."""

    query: Any
    key: Any
    key_dim: int
    value: Any
    loud: bool


class Projection(NamedTuple):
    """A linear map ``y = x W + b`` on the last dim that a head-dims walk starts or ends at:
    the weight and bias tensors, and the weight's dim of output channels (its other dim
    takes the input's)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    out_dim: int


# ---- what a module rule says to the tracer and to gate insertion ----------------------------
@dataclass(frozen=True)
class Tracing:
    """How the tracer treats a module: called as one op (:data:`LEAF`), or, with `function`,
    entered through ``function(module, *args, **kwargs)``: its forward written with
    traceable ops (:func:`trace_through`)."""

    function: Callable | None = None


LEAF = Tracing()


def trace_through(function: Callable) -> Tracing:
    return Tracing(function)


class FoldedCall(NamedTuple):
    """``function(x, weight * z, bias, *rest)`` computes ``module(x * z)``: a gate ``z`` on the
    input channels folds into the weight's dim 1 during training."""

    function: Callable
    rest: tuple


# ---- the handles a rule receives -------------------------------------------------------------
class Connecting(Protocol):
    """What :meth:`Rule.connect` may ask and tell the channel analysis."""

    def space(self, value) -> Space | None:
        """The channel space of an input (None: not a tensor with channels)."""

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        """`node`'s output shape on the example inputs."""

    def module(self, node: fx.Node) -> nn.Module:
        """The module a ``call_module`` node calls."""

    def attribute(self, node: fx.Node) -> Any:
        """The value a ``get_attr`` node reads."""

    def rule_of(self, node: fx.Node) -> Rule | None:
        """The rule of another node (a model input asks its readers where their channels are)."""

    def describe(self, node: fx.Node) -> str:
        """`node` as errors and reports name it: module, function, source line."""

    def new_space(self, node: fx.Node, dim: int, *, producer: bool = False, title: str | None = None) -> Space:
        """Open a space for `node`'s output along `dim` (negative counts from the end): channels
        unrelated to its inputs (``producer``: a layer's own output channels, which name the group;
        `title`: the name reports give it, by default the node's module, input or name)."""

    def follow(self, node: fx.Node, src: Space, dim: int) -> Space:
        """A space for `node` along `dim` whose channels are `src`'s, one to one."""

    def new_part(self, node: fx.Node, index: int, part: fx.Node, dim: int) -> Space:
        """Open a space for the channels that `part`, input `index` of `node`, gives `node`'s output
        along `dim`, where `part` has none there (a coordinate grid joined to the features): a
        producer of its own, so each of them may close; :meth:`Pruning.part` gives it back."""

    def param_space(self, tensor: torch.Tensor, dim: int) -> Space:
        """The space of a parameter or buffer along `dim`, shared by all its readers; sliced
        with the channels it is tied to."""

    def tie(self, a: Space, b: Space, a_idx=None, b_idx=None) -> None:
        """Channel ``a_idx[k]`` of `a` is channel ``b_idx[k]`` of `b` (default: identity)."""

    def block(self, space: Space, reason: str) -> None:
        """Keep `space`'s group whole, and say why in summary()."""

    def accept(self, space: Space) -> None:
        """The op reads this input without depending on its channels (a shape read of a batch size)."""

    def consume(self, node: fx.Node, input_node: fx.Node, fold: list[Space]) -> None:
        """`node` is linear in `input_node`'s channels through the parameter spaces `fold`: a
        gate goes in front of it and folds into those parameters when pruned."""

    def claim(self, node: fx.Node) -> None:
        """This rule describes `node` too (the ``[i]`` reads of a split's pieces): its own
        rule is not asked."""


class Pruning(Protocol):
    """What :meth:`Rule.prune` may ask and do while the cut model is built."""

    def space(self, node) -> Space | None:
        """The channel space of a node of the model as it was analysed (None for nodes added since)."""

    def kept(self, space: Space) -> np.ndarray:
        """Original indices of `space`'s channels that stay, in order."""

    def n_kept(self, space: Space) -> int:
        """How many of `space`'s channels stay."""

    def extra_spaces(self, node: fx.Node) -> list[Space]:
        """`node`'s spaces on dims other than its channel dim (a head's dims)."""

    def part(self, node: fx.Node, index: int) -> Space | None:
        """The space :meth:`Connecting.new_part` opened for input `index` of `node`, or None."""

    def is_empty(self, node) -> bool:
        """Every channel of `node` closed: it goes."""

    def is_const(self, node) -> bool:
        """`node`'s value no longer depends on the inputs (:meth:`const` gives it)."""

    def is_live(self, node) -> bool:
        """`node` is computed from the inputs in the cut model."""

    def is_static(self, node) -> bool:
        """A constant or an attribute (but not a buffer forward updates)."""

    def const(self, node: fx.Node) -> torch.Tensor:
        """A constant node's value, in broadcast form (one value per channel, size 1 elsewhere)
        where the ops before it kept that form."""

    def value(self, node: fx.Node):
        """The value of a static node."""

    def module(self, node: fx.Node) -> nn.Module:
        """The module a ``call_module`` node calls (its parameters not yet sliced)."""

    def evaluate(self, node: fx.Node, value_of: Callable | None = None):
        """`node`'s op on the values of its inputs (all static), each taken by `value_of`."""

    def evaluate_at_example(self, node: fx.Node):
        """`node`'s op on static inputs at their example shapes (the batch apart): for an op
        whose result varies over space; summary() lists it as valid at that size only."""

    def holds_at_example_size(self, node: fx.Node) -> None:
        """Record that the constant `node` computes holds at the example input's spatial size only."""

    def broadcast_form(self, node: fx.Node, vector: torch.Tensor) -> torch.Tensor:
        """`vector` (one value per channel) shaped like `node`'s output with every other dim 1."""

    def is_uniform(self, node: fx.Node) -> bool:
        """A constant in broadcast form."""

    def replace_input(self, node: fx.Node, old: fx.Node, new: fx.Node) -> None:
        """`node` reads `new` where it read `old`."""

    def const_attr(self, node: fx.Node, user: fx.Node, value: torch.Tensor | None = None) -> fx.Node:
        """A buffer holding `node`'s constant (kept channels only), read before `user`."""

    def materialize(self, node: fx.Node, user: fx.Node) -> fx.Node:
        """`node`'s constant expanded to its runtime shape, computed before `user`."""

    def materialize_dead_inputs(self, node: fx.Node) -> Outcome:
        """Feed `node` its constant inputs at their runtime shapes (the default prune)."""

    def reference(self, node: fx.Node, dims: list[int], user: fx.Node | None = None) -> fx.Node:
        """A live tensor whose runtime size equals `node`'s on `dims`."""

    def insert(self, before: fx.Node, op: str, target, args: tuple, kwargs: dict | None = None) -> fx.Node:
        """A new node ``op(target, args, kwargs)`` ("call_method" or "call_function") before `before`."""

    def erase(self, node: fx.Node) -> None:
        """Remove a node that nothing reads any more."""

    def add_witness(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        """`node`, live, carries a runtime size no kept node has (the number of graphs after a
        pooling whose channels all closed); constants of example size `shape` expand to it."""


# ---- the rules ---------------------------------------------------------------------------------
class Rule:
    """How one op moves channels. Subclasses override :meth:`connect` and, where the op
    needs more than "materialise dead inputs", :meth:`prune`."""

    channels_at: int | None = None  # the dim a layer reads as channels (tells a model input's feature dim)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        """Describe the op to the channel graph; raise :class:`Unsupported` to keep its channels."""
        raise Unsupported("its rule does not say how it moves channels")

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        """Rewrite `node` for the cut model; :data:`LIVE`, :func:`const` or :data:`EMPTY`."""
        return pc.materialize_dead_inputs(node)

    def emptied(self, node: fx.Node, pc: Pruning) -> None:
        """Called instead of :meth:`prune` when every channel of `node` closed (it goes)."""

    def head_role(self, node: fx.Node) -> HeadRole | None:
        """What `node` is between a projection and an attention; None: the head-dims walk stops."""
        return None

    def attention(self, node: fx.Node) -> Attention | None:
        """`node`'s operands if it is an attention whose head dims may be cut."""
        return None

    def projection(self, node: fx.Node, an: Connecting) -> Projection | None:
        """`node`'s weights if it is a linear map of its input's last dim whose rows (output
        channels) and columns (input channels) the head-dims pass may cut."""
        return None

    def ties_parameter(self, node: fx.Node, value: fx.Node) -> bool:
        """Whether this rule ties every dim of `value`, a parameter read in forward that `node`
        takes as an argument (``F.linear(x, self.weight)``), itself: the read is then left to it."""
        return False


class ModuleRule(Rule):
    """A rule for an ``nn.Module`` class."""

    def tracing(self, module: nn.Module) -> Tracing:
        """How the tracer treats `module`: :data:`LEAF` (one op, the default for a module with a
        rule), or :func:`trace_through` a function."""
        return LEAF

    def write_out(self, node: fx.Node, gm: fx.GraphModule) -> bool:
        """After tracing: replace the call `node` in `gm` by the ops it computes; True if it did."""
        return False

    def folded(self, module: nn.Module) -> FoldedCall | None:
        """The functional form an input gate folds into during training; None: gate the input."""
        return None

    def resize(self, module: nn.Module) -> None:
        """Update the module's size attributes after its parameters were sliced."""

    def traceable(self, module: nn.Module) -> nn.Module:
        """What export traces to write `module` out as torch code: a module computing the same
        with the same parameters under the same names, in code fx can trace. The default is
        `module` itself."""
        return module

    def source(self, module: nn.Module) -> str:
        """Python expression that constructs `module` (with ``nn`` = ``torch.nn``). The default,
        ``nn.<repr>``, serves torch.nn modules whose repr is their constructor call; export
        checks it, and names the module when it does not rebuild it."""
        return generic_module_source(module)


def generic_module_source(module: nn.Module) -> str | None:
    """``nn.<repr>`` for a childless torch.nn module whose repr is its constructor call, and
    ``torch_geometric.nn.<package>.<repr>`` for a torch_geometric.nn one (``SumAggregation()``);
    None for a module of another library."""
    cls = type(module)
    if cls.__module__.startswith("torch.nn."):
        return f"nn.{module!r}"
    parts = cls.__module__.split(".")
    if parts[:2] != ["torch_geometric", "nn"]:
        return None
    for end in range(2, len(parts) + 1):  # the shortest package path that exposes the class
        package = ".".join(parts[:end])
        if getattr(importlib.import_module(package), cls.__name__, None) is cls:
            return f"{package}.{module!r}"
    return None


# ---- helpers every rule uses -------------------------------------------------------------------
def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument `name` of `node`, given positionally at `index` or as a keyword."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def set_arg(node: fx.Node, index: int, name: str, value: Any) -> None:
    """Set argument `name` where the call gives it (positionally at `index`, else as a keyword)."""
    if len(node.args) > index:
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, name: value}


def varargs(rest) -> list:
    """Sizes or dims given as ``f(a, b, c)`` or as ``f((a, b, c))``, as a list."""
    return list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else list(rest)


def scales_by_number(node: fx.Node, value: fx.Node) -> bool:
    """Whether `node` is `value` times or divided by a Python number (``self.weight / c``)."""
    if node.op != "call_function" or node.target not in (operator.mul, operator.truediv) or len(node.args) != 2:
        return False
    a, b = node.args
    return (a is value and isinstance(b, (int, float))) or (
        node.target is operator.mul and b is value and isinstance(a, (int, float)))


def transposes(node: fx.Node, value: fx.Node) -> bool:
    """Whether `node` is the transpose of `value`, a matrix (``w.t()``, ``w.T``, ``w.transpose(0, 1)``)."""
    if len(shape_of(value) or ()) != 2 or not node.args or node.args[0] is not value:
        return False
    if node.op == "call_method" and node.target == "t" or node.op == "call_function" and node.target is torch.t:
        return len(node.args) == 1
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in ("T", "mT")
    return (node.op == "call_method" and node.target == "transpose" and len(node.args) == 3
            and {normalize_dim(d, 2) for d in node.args[1:]} == {0, 1})


def parameter_behind(value) -> tuple[fx.Node, bool] | None:
    """The ``get_attr`` that `value` reads through multiplications and divisions by Python
    numbers and transposes (e3nn's ``x @ (self.weight / sqrt(fan_in))``, PyG PMLP's
    ``x @ self.lin.weight.t()``), and whether it is read transposed; None if it is not such a read."""
    flipped = False
    while isinstance(value, fx.Node) and value.op != "get_attr":
        source = next((a for a in value.args if isinstance(a, fx.Node)), None)
        if source is None or not (scales_by_number(value, source) or transposes(value, source)):
            return None
        flipped ^= transposes(value, source)
        value = source
    return (value, flipped) if isinstance(value, fx.Node) else None


class SizeRead(NamedTuple):
    """A size the forward read off a tensor: ``tensor.size(dim)`` times `factor`."""

    tensor: fx.Node
    dim: int
    factor: int


def size_read(value) -> SizeRead | None:
    """`value` as ``x.size(d)``, ``x.shape[d]`` or ``x.size()[d]``, maybe times Python ints
    (``num_heads * n_rep``); None for anything else."""
    factor = 1
    while isinstance(value, fx.Node) and value.op == "call_function" and value.target is operator.mul:
        ints = [a for a in value.args if isinstance(a, int) and not isinstance(a, bool)]
        nodes = [a for a in value.args if isinstance(a, fx.Node)]
        if len(ints) != 1 or len(nodes) != 1:
            return None
        factor, value = factor * ints[0], nodes[0]
    if not isinstance(value, fx.Node):
        return None
    if value.op == "call_method" and value.target == "size" and len(value.args) == 2 and isinstance(value.args[1], int):
        x, d = value.args
    elif (value.op == "call_function" and value.target is operator.getitem and isinstance(value.args[1], int)
          and isinstance(value.args[0], fx.Node) and _reads_whole_shape(value.args[0])):
        x, d = value.args[0].args[0], value.args[1]
    else:
        return None
    shape = shape_of(x) if isinstance(x, fx.Node) else None
    return SizeRead(x, normalize_dim(d, len(shape)), factor) if shape is not None else None


def channel_count_read(value, an: Connecting | Pruning) -> SizeRead | None:
    """`value` as a read of a tensor's channel count (:func:`size_read` on its space's dim)."""
    read = size_read(value)
    space = an.space(read.tensor) if read is not None else None
    return read if space is not None and space.dim == read.dim else None


def check_read_counts(node: fx.Node, sizes: list, out: Space | None, an: Connecting, stays: bool = False) -> None:
    """The channel counts among `sizes`, the target shape of `node` (view, reshape, expand),
    read off tensors. One given as the whole size of the output's channel dim (`out`), times
    ints, is rewritten by the cut (to ``-1``: transformers' ``repeat_kv``, ``expand(b, h, n,
    s, d)`` and ``reshape(b, h * n, s, d)``); where it must stay (`stays`: another size is
    ``-1``, ``x.view(-1, x.size(-1))``), the channels it counts are tied to `out`'s, ``factor``
    of them each, so that it reads the kept count. One given as the size of another dim
    keeps the channels it counts whole."""
    for position, size in enumerate(sizes):
        read = channel_count_read(size, an)
        if read is None:
            continue
        if out is None or position != out.dim or not reads_count_of(node, position, read):
            an.block(an.space(read.tensor), f"its channel count is read by {an.describe(node)} as the size of "
                                            "another dim")
        elif stays:
            idx = np.arange(shape_of(node)[position])
            an.tie(an.space(read.tensor), out, idx // read.factor, idx)


def reads_count_of(node: fx.Node, position: int, read: SizeRead | None) -> bool:
    """Whether `read`, at `position` of `node`'s target shape, is that output dim's whole size."""
    return read is not None and shape_of(node)[position] == read.factor * shape_of(read.tensor)[read.dim]


def _reads_whole_shape(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target == "size" and len(node.args) == 1) or (
        node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",))


def dims_indexed(user: fx.Node, ndim: int) -> list[int] | None:
    """The dims of a shape that ``shape[i]`` or ``shape[a:b]`` reads (``len(shape)``, the rank,
    reads none); None for other uses."""
    if user.op == "call_function" and user.target is builtins.len:
        return []
    index = user.args[1] if user.op == "call_function" and user.target is operator.getitem else None
    if isinstance(index, int):
        return [index]
    if isinstance(index, slice):
        return list(range(ndim))[index]
    return None


METADATA_READS = frozenset({"dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "dim", "ndimension"})


def shape_query(node: fx.Node) -> str | None:
    """What `node` asks of its input: the method (``x.size(...)``, ``x.dim()``) or attribute
    (``x.shape``, ``x.dtype``) name; None for a node that is neither."""
    if node.op == "call_method":
        return node.target
    if node.op == "call_function" and node.target is getattr and len(node.args) == 2:
        return node.args[1]
    return None


def axes_read(node: fx.Node, x: fx.Node) -> set[int] | None:
    """The dims of `x` whose sizes `node` reads, if `node` only reads `x`'s shape
    (``x.shape[2]``, ``x.size(0)``, ``x.dtype``); None if it does anything else."""
    ndim = len(shape_of(x) or ())
    what = shape_query(node)
    if not node.args or node.args[0] is not x or what is None:
        return None
    if what in METADATA_READS:
        return set()
    if what == "size" and len(node.args) > 1 and isinstance(node.args[1], int):
        return {normalize_dim(node.args[1], ndim)}
    if what in ("size", "shape") and len(node.args) == (1 if what == "size" else 2):
        read = set()
        for user in node.users:
            dims = dims_indexed(user, ndim)
            if dims is None:
                return None
            read.update(normalize_dim(d, ndim) for d in dims)
        return read
    return None


def parameter_readers(node: fx.Node):
    """``(reader, value it reads)`` for the readers of `node` (a parameter read in forward),
    through multiplications and divisions by Python numbers and transposes (``self.weight / c``,
    ``self.weight.t()``)."""
    for user in node.users:
        if scales_by_number(user, node) or transposes(user, node):
            yield from parameter_readers(user)
        else:
            yield user, node


def target_name(node: fx.Node) -> str:
    """The name of the method or function a call node runs ('' for other nodes)."""
    if node.op == "call_method":
        return node.target
    return getattr(node.target, "__name__", "") if node.op == "call_function" else ""


def kept_in_range(kept: np.ndarray, start: int, stop: int) -> int:
    """How many of the kept indices `kept` lie in ``[start, stop)`` (a slice's new bounds)."""
    return int(((kept >= start) & (kept < stop)).sum())


def run_op(node: fx.Node, value_of: Callable[[fx.Node], Any], module: nn.Module | None = None):
    """Run `node`'s op with every input node replaced by ``value_of(input)`` (`module`: the
    module a ``call_module`` node calls). The one way lumos_fx runs a node on values of its
    own: example constants, meta tensors, tensors of channel indices."""
    return call_op(node.op, node.target, map_arg(node.args, value_of), map_arg(node.kwargs, value_of), module)


def call_op(op: str, target, args: tuple, kwargs: dict, module: Callable | None = None):
    """Call what an fx node of kind `op` calls (`module` for ``call_module``) on values."""
    if op == "call_module":
        return module(*args, **kwargs)
    if op == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    return target(*args, **kwargs)


def run_on(node: fx.Node, x: torch.Tensor):
    """Run `node`'s function or method with `x` in place of its first argument (the other
    arguments must be constants)."""
    first, computed = node.args[0], []
    map_arg((node.args[1:], node.kwargs), computed.append)  # nodes nested in lists and dicts too
    if computed:
        raise Unsupported("takes arguments computed in forward")
    return run_op(node, lambda n: x if n is first else n)
