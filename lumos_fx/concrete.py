"""Shape-concrete tracing: every traced value carries its example, and Python decisions on
shapes resolve while tracing, each kept honest by a guard.

While :class:`lumos_fx.tracer.LumosTracer` traces, each proxy also holds the value its op
gives on the example inputs (``example``; ops run on copies of them, the model's state put
back afterwards), and whether that value depends on the inputs' shapes, dtypes and devices
only (``shape_only``: ``x.shape``, ``x.size(1)``, ``x.dim()``, ``x.dtype``, and arithmetic
or comparisons of those). Where Python needs a concrete value of such a proxy,

- ``if x.ndim != 4:``, ``assert x.shape[-1] == 3``, ``(h, w) != expected`` (``bool``),
- ``range(x.size(1))``, ``int(x.shape[2] / 2)`` (``__index__``, ``__int__``, ``__float__``),
- ``len(x)``, ``len(x.shape)``, ``for s in x.shape`` (``__len__``, iteration),
- ``np.array(x.shape[2:])`` (``__array__``), ``self.recipes[x.ndim]`` (``ndim`` is an int),

it gets the example's answer, and the graph gets ``torch._assert`` of that answer at that
point, with a message naming the source line and the value: the traced graph then holds
for every input that takes the same path, and says so when one does not. Sizes that flow
into arithmetic and reshapes stay symbolic, so the graph still runs at other batch and
spatial sizes where the model's own code does. A decision on tensor values (``if x.sum() >
0``) still raises: its example is a tensor, not a shape.
"""

from __future__ import annotations

import builtins
import functools
import math
import operator
import sys
import traceback
import types
from contextlib import contextmanager

import numpy as np
import torch
import torch._dynamo  # noqa: F401  # before symbolic_sizes patches torch: see there
from torch import fx
from torch.fx._symbolic_trace import _maybe_revert_all_patches
from torch.fx.node import map_aggregate

from .errors import is_library_file
from .node_info import Decision, annotate
from .rules.api import call_op

UNKNOWN = object()  # the example of an op that failed on example values: decisions on it raise as in fx

# Reads of a tensor's metadata, whose values hold for every input of the same shape and dtype.
_SHAPE_METHODS = frozenset({"size", "dim", "ndimension", "numel", "nelement", "is_floating_point", "is_complex",
                            "element_size", "get_device", "is_contiguous", "stride"})
SHAPE_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "layout", "is_sparse",
                               "is_quantized", "is_meta"})


def example_of(root: torch.nn.Module, kind: str, target, args: tuple, kwargs: dict) -> tuple[object, bool]:
    """The value of a new node's op on its inputs' examples, and whether it is shape-only."""
    proxies: list[fx.Proxy] = []

    def value(a):
        if isinstance(a, fx.proxy.Attribute) and "example" not in a.__dict__:
            # fx records ``x.real`` only when it is used: its example is the attribute of x's.
            root = value(a.root)
            return UNKNOWN if root is UNKNOWN else getattr(root, a.attr, UNKNOWN)
        if isinstance(a, fx.Proxy):
            proxies.append(a)
            return a.__dict__.get("example", UNKNOWN)
        # A tensor the forward made outside the graph becomes a constant of it: an in-place op
        # on the example (batch_norm's running statistics) must not change that constant.
        return a.clone() if isinstance(a, torch.Tensor) else a

    args, kwargs = map_aggregate(args, value), map_aggregate(kwargs, value)
    if any(p.__dict__.get("example", UNKNOWN) is UNKNOWN for p in proxies):
        return UNKNOWN, False
    reads_shape = (kind == "call_method" and target in _SHAPE_METHODS) or (
        kind == "call_function" and target is builtins.getattr and args[1] in SHAPE_ATTRIBUTES)
    shape_only = reads_shape or (bool(proxies) and all(p.__dict__.get("shape_only", False) for p in proxies))
    try:
        if kind not in ("call_module", "call_method", "call_function"):
            return UNKNOWN, False
        module = None
        if kind == "call_module":
            # On copies of its buffers: a BatchNorm in train mode updates its statistics.
            leaf = root.get_submodule(target)
            buffers = {name: b.clone() for name, b in leaf.named_buffers()}

            def module(*a, **k):
                return torch.func.functional_call(leaf, buffers, a, k, strict=False)
        with torch.no_grad():
            result = call_op(kind, target, args, kwargs, module)
    except Exception:  # an op the example values cannot run: the proxy stays symbolic only
        return UNKNOWN, False
    return result, shape_only and not isinstance(result, torch.Tensor)


def _copy(value):
    """A tensor attribute's example: a copy (an in-place op on it must not reach the model), of
    the same class (``isinstance(w, nn.Parameter)`` is answered from it)."""
    if isinstance(value, torch.nn.Parameter):
        return torch.nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def _same(value):
    return value


def model_frame() -> traceback.FrameSummary | None:
    """The innermost frame of the model's code (not lumos_fx, not torch) on the stack."""
    frame = sys._getframe(1)
    while frame is not None and is_library_file(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return None
    return traceback.FrameSummary(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


def _proxies(values):
    """The proxies among `values`, in tuples or lists of them, or in a slice's bounds."""
    for v in values:
        if isinstance(v, slice):
            v = (v.start, v.stop, v.step)
        if isinstance(v, fx.Proxy):
            yield v
        elif isinstance(v, (tuple, list)):
            yield from _proxies(v)


def _holds_proxy(values) -> bool:
    return next(_proxies(values), None) is not None


def _traced(function):
    """`function` (torch's C code) recorded as a node when a traced value is among its
    arguments, before torch's argument parser sees them: the parser reads a proxy in an
    int or int-list argument (``grid.repeat(b, 1)``, ``F.pad(x, (0, w - m))``,
    ``torch.zeros(b, c, h, w)``) through ``__index__``, which would decide the size."""
    @functools.wraps(function)
    def traced(*args, **kwargs):
        if _holds_proxy(args) or _holds_proxy(kwargs.values()):
            return fx.Proxy.__torch_function__(function, (), args, kwargs)
        return function(*args, **kwargs)
    traced.__lumos_wraps__ = function
    return traced


def _indexed(getitem):
    """``tensor[index]`` of a tensor the model holds with traced bounds
    (``self.position_ids[:, :seq_length]``): recorded as fx records indexing."""
    @functools.wraps(getitem)
    def indexed(self, index):
        proxy = next(_proxies((index,)), None)
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", operator.getitem, (self, index), {})
        return getitem(self, index)
    return indexed


def _dtype_info(info):
    """``torch.finfo(x.dtype)`` of a traced dtype: the example's, guarded (a type of C code
    that cannot be called on a proxy)."""
    @functools.wraps(info, updated=())
    def decided(*args):
        if args and isinstance(args[0], fx.Proxy):
            args = (args[0].tracer.decide(args[0], _same, f"torch.{info.__name__}"), *args[1:])
        return info(*args)
    return decided


_C_CODE = (types.BuiltinFunctionType, types.MethodDescriptorType)
_NAMESPACES = (torch, torch.nn.functional, torch.fft, torch.linalg, torch.special)
# Private names, the __torch_function__ protocol itself and queries/settings of torch's state.
_NOT_OPS = ("_", "has_torch_function", "is_", "set_", "get_")


_ABSENT = object()


@functools.cache
def _size_wrappers() -> tuple[tuple[object, str, object, object], ...]:
    """(owner, name, what the owner itself holds or _ABSENT, wrapper) for every C function."""
    # torch caches which functions are Tensor methods on first use: fill it with the originals.
    torch.overrides._get_tensor_methods()
    found = []
    for owner in (*_NAMESPACES, torch.Tensor):
        names = dir(torch._C.TensorBase) if owner is torch.Tensor else list(vars(owner))
        for name in names:
            value = getattr(owner, name)
            if not name.startswith(_NOT_OPS) and isinstance(value, _C_CODE):
                found.append((owner, name, vars(owner).get(name, _ABSENT), _traced(value)))
    found += [(torch, info.__name__, info, _dtype_info(info)) for info in (torch.finfo, torch.iinfo)]
    found.append((torch.Tensor, "__getitem__", vars(torch.Tensor).get("__getitem__", _ABSENT),
                  _indexed(torch.Tensor.__getitem__)))
    return tuple(found)


@contextmanager
def symbolic_sizes():
    """While tracing: torch's C functions and Tensor methods take traced sizes symbolically.

    torch._dynamo is imported with this module, not while these are in place: it snapshots
    ``torch.finfo`` and ``torch.iinfo`` into its constant types on import, and fx's node
    records import it lazily (through ``torch._inductor``) on the first trace; a snapshot of
    the wrappers made every later ``torch.compile`` of the instrumented model fail on a
    guard."""
    wrappers = _size_wrappers()
    for owner, name, _, wrapper in wrappers:
        setattr(owner, name, wrapper)
    try:
        yield
    finally:
        for owner, name, original, _ in wrappers:
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


class ShapeConcrete:
    """Tracer mixin: examples on every proxy, concrete answers to shape questions, guards."""

    examples: list | None = None  # the placeholders' example values, in order (None: no examples)
    computing_example = False

    def start_examples(self, examples: list) -> None:
        self._inputs = iter(examples)
        self.examples = examples
        self.decisions: list[Decision] = []
        self._guarded: set[tuple[fx.Node, object]] = set()

    def attach_example(self, proxy: fx.Proxy, kind: str, target, args, kwargs) -> None:
        if self.examples is None:
            return
        # The ops run as the model runs them: without fx's patches (a module call, a parameter
        # read would be traced again) and without the tracer's own (an attribute a leaf sets
        # is its own business).
        self.computing_example = True
        try:
            with _maybe_revert_all_patches():
                proxy.example, proxy.shape_only = self._example(kind, target, args, kwargs)
        finally:
            self.computing_example = False

    def _example(self, kind: str, target, args, kwargs) -> tuple[object, bool]:
        if kind == "placeholder":
            value = next(self._inputs, UNKNOWN)
            return (value.detach().clone() if isinstance(value, torch.Tensor) else value), False
        if kind == "get_attr":
            try:
                return _copy(operator.attrgetter(target)(self.root)), False
            except AttributeError:
                return UNKNOWN, False
        return example_of(self.root, kind, target, args, kwargs)

    # ---- concrete answers ------------------------------------------------------------------
    def known(self, proxy: fx.Proxy, shape_only: bool = True):
        """The example of `proxy` if Python may decide on it, else UNKNOWN."""
        example = proxy.__dict__.get("example", UNKNOWN)
        if example is UNKNOWN or (shape_only and not proxy.__dict__.get("shape_only", False)):
            return UNKNOWN
        return example

    def decide(self, proxy: fx.Proxy, convert, what: str):
        """`convert` of `proxy`'s example, guarded in the graph; raises fx's TraceError when
        the value depends on tensor values."""
        example = self.known(proxy)
        if example is UNKNOWN:
            raise fx.proxy.TraceError(f"symbolically traced variables cannot be used as inputs to control flow "
                                      f"({what} of a value computed from tensor values)")
        value = convert(example)
        self.guard(proxy, value)
        return value

    def decide_length(self, proxy: fx.Proxy) -> int:
        """``len`` of a traced shape or tensor (a tensor's is its first size: a shape question)."""
        example = self.known(proxy, shape_only=False)
        if example is UNKNOWN or not (isinstance(example, (torch.Tensor, tuple, list))):
            raise fx.proxy.TraceError("'len' of a traced value lumos_fx has no example of")
        n = len(example)
        self.guard(self.create_proxy("call_function", builtins.len, (proxy,), {}), n)
        return n

    def decide_rank(self, proxy: fx.Proxy) -> int:
        example = self.known(proxy, shape_only=False)
        n = example.dim()
        self.guard(self.create_proxy("call_function", builtins.getattr, (proxy, "ndim"), {}), n)
        return n

    def guard(self, proxy: fx.Proxy, value) -> None:
        """``torch._assert`` in the graph that `proxy` has `value`, as on the example inputs."""
        if (proxy.node, value) in self._guarded:
            return
        self._guarded.add((proxy.node, value))
        frame = model_frame()
        where = f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}" if frame else "the forward"
        decision = Decision(where, value)
        self.decisions.append(decision)
        if isinstance(value, bool):
            condition = proxy if value else self.create_proxy("call_function", operator.not_, (proxy,), {})
        else:
            condition = self.create_proxy("call_function", operator.eq, (proxy, value), {})
        message = f"lumos_fx: {decision}; this input takes another path"
        node = self.create_proxy("call_function", torch._assert, (condition, message), {}).node
        annotate(node, decision=decision)


# NumPy's ufuncs that a Python operator spells (``np.float32(2) * h`` calls np.multiply).
_NUMPY_OPERATORS = {np.add: operator.add, np.subtract: operator.sub, np.multiply: operator.mul,
                    np.true_divide: operator.truediv, np.floor_divide: operator.floordiv, np.power: operator.pow,
                    np.remainder: operator.mod, np.negative: operator.neg, np.positive: operator.pos,
                    np.equal: operator.eq, np.not_equal: operator.ne, np.less: operator.lt,
                    np.less_equal: operator.le, np.greater: operator.gt, np.greater_equal: operator.ge}


class TracedSizes(tuple):
    """A slice of a traced shape: its traced sizes, with torch.Size's ``numel()``
    (transformers' ``pixel_values.shape[1:].numel()``)."""

    def numel(self):
        return math.prod(self)


class ConcreteProxy:
    """Proxy mixin: Python's conversions ask the tracer for the example's answer."""

    @classmethod
    def __torch_function__(cls, orig_method, types, args=(), kwargs=None):
        # torch's C code finds a Tensor method by its name on the class: while tracing, the
        # wrapper of symbolic_sizes; the graph records what it wraps.
        return super().__torch_function__(getattr(orig_method, "__lumos_wraps__", orig_method), types, args, kwargs)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """A NumPy function of shapes computes on the example's numbers (``np.ceil(h / 7)``);
        one a Python operator spells runs as that operator on the proxy (``np.float32(2) * h``);
        any other on a traced tensor is refused (TraceError names the line)."""
        if method == "__call__" and not kwargs:
            proxies = [i for i in inputs if isinstance(i, fx.Proxy)]
            if all(self.tracer.known(p) is not UNKNOWN for p in proxies):
                return ufunc(*(self.tracer.decide(i, _same, "a NumPy function") if isinstance(i, fx.Proxy) else i
                               for i in inputs))
            if ufunc in _NUMPY_OPERATORS:
                return _NUMPY_OPERATORS[ufunc](*(i.item() if isinstance(i, np.generic) else i for i in inputs))
        raise TypeError(f"operand '{type(self).__name__}' does not support ufuncs (__array_ufunc__): "
                        f"np.{ufunc.__name__} of a traced tensor")

    def __len__(self) -> int:
        return self.tracer.decide_length(self)

    def __getitem__(self, index):
        """A slice of a traced shape (``x.size()[:-1]``) is a tuple of its traced sizes, so
        that the shape built from it (``x.size()[:-1] + (nf,)``) holds its literals where rules
        see them. Its length is the rank, fixed by the input ranks the pruned model checks."""
        example = self.tracer.known(self) if "tracer" in self.__dict__ else UNKNOWN
        if isinstance(example, torch.Size) and isinstance(index, slice) and not _holds_proxy((index,)):
            item = super().__getitem__
            return TracedSizes(item(i) for i in range(len(example))[index])
        return super().__getitem__(index)

    def __index__(self) -> int:
        return self.tracer.decide(self, operator.index, "an index")

    def __int__(self) -> int:
        return self.tracer.decide(self, int, "int()")

    def __float__(self) -> float:
        return self.tracer.decide(self, float, "float()")

    def __round__(self, ndigits=None):
        return self.tracer.decide(self, lambda v: round(v, ndigits), "round()")

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.tracer.decide(self, lambda v: tuple(v) if isinstance(v, torch.Size) else v,
                                             "a NumPy array"), dtype=dtype)
