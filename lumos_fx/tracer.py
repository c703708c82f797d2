"""The fx.Tracer of lumos_fx: leaves, NumPy constants, buffer updates, and isinstance on traced values.

Beyond :class:`torch.fx.Tracer`, while it traces a model it

- calls the user's ``Config.leaf_modules`` as one op each, and every other module as its
  rule says (:meth:`~lumos_fx.rules.api.ModuleRule.tracing`: one op, or traced through a
  function), torch.nn layers without one as one op; a module class's own ``__call__`` goes
  through the same hook;
- turns NumPy scalars into Python numbers and NumPy arrays into tensor constants, as torch
  itself reads them (``x * np.float32(2)``, ``np.sqrt(2 / np.pi) * x``: NumPy defers to the
  proxy, since :class:`LumosProxy` says it takes no part in NumPy's ufuncs);
- reads the buffers a forward updates (``stateful``) as graph values, so that their in-place
  updates become graph ops, and writes an assignment to a buffer (``self.m = 0.9 * self.m``)
  as ``m.copy_(...)``: the graph then repeats the update on every call;
- records every other assignment to a module attribute in user code, with its source line
  (side effects the graph cannot hold, reported by :mod:`lumos_fx.trace`);
- answers ``isinstance(v, torch.Tensor)``, ``torch.jit.isinstance`` and ``torch.is_tensor``
  on a traced value from user code as the value's type (a tensor, or the ``torch.Size`` or
  ``int`` of a shape read) and records the answer, to be checked against the type the value
  has when the graph runs (:class:`IsinstanceQuery`);
- gives ``*args`` one placeholder per value the example passes and ``**kwargs`` none;
- gives a traced tensor its example's attributes only (``hasattr(x, "redistribute")``).
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import functools
import inspect
import operator
import sys
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn
from torch.fx import _symbolic_trace
from torch.fx._symbolic_trace import PH
from torch.utils import _pytree as pytree

from . import pyg_trace
from .concrete import SHAPE_ATTRIBUTES, UNKNOWN, ConcreteProxy, ShapeConcrete, symbolic_sizes
from .config import module_matches
from .errors import is_library_file
from .node_info import annotate
from .rules import REGISTRY
from .side_effects import Change

_isinstance = builtins.isinstance
_SHAPE_METHODS = {"size": torch.Size, "dim": int, "ndimension": int, "numel": int}


class LumosProxy(ConcreteProxy, fx.Proxy):
    """fx.Proxy with its example value (:mod:`lumos_fx.concrete`), that NumPy defers to
    (``np.float32(2) * proxy`` calls ``proxy.__rmul__``), that records item assignment
    (``h[:, :2] *= 0.5``) as ``operator.setitem``, and that has the attributes of its
    example tensor only."""

    # Libraries that pick an array backend from the module of the array's class (opt_einsum's
    # backend="auto", under tensorly's einsum) take a proxy for what it stands for: a torch tensor.
    __module__ = "torch.fx.proxy"

    def __setitem__(self, key, value) -> None:
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})

    def __getattr__(self, name: str):
        if name.startswith("__array"):  # NumPy's probes before __array__: not tensor attributes
            raise AttributeError(name)
        example = self.tracer.known(self, shape_only=False) if "tracer" in self.__dict__ else None
        if name in SHAPE_ATTRIBUTES and _isinstance(example, torch.Tensor):
            if name == "ndim":  # a rank is asked to pick code (einops' recipe per ndim): an int
                return self.tracer.decide_rank(self)
            return self.tracer.create_proxy("call_function", builtins.getattr, (self, name), {})
        if _isinstance(example, torch.Tensor) and not hasattr(example, name):
            # Duck typing (``hasattr(x, "redistribute")`` for a distributed tensor) gets the
            # tensor's answer, not fx's "every attribute exists".
            raise AttributeError(f"'{type(example).__name__}' object has no attribute '{name}'")
        return super().__getattr__(name)


@dataclass
class IsinstanceQuery:
    """An ``isinstance`` test user code made on a traced value, and the answer it got."""

    node: fx.Node
    cls: object
    answer: bool
    where: str
    taken_for: type  # what the tracer took the value for


def _own_calls(root: nn.Module) -> list[type]:
    """The classes, among those of `root`'s modules and their bases, that define ``__call__``."""
    owners = {next(c for c in type(m).__mro__ if "__call__" in vars(c)) for m in root.modules()}
    return [c for c in owners if c is not nn.Module and issubclass(c, nn.Module)]


def _user_frame(depth: int) -> traceback.FrameSummary | None:
    """The frame `depth` levels above the caller, if it lies in user code."""
    frame = sys._getframe(depth + 1)
    if is_library_file(frame.f_code.co_filename):
        return None
    return traceback.FrameSummary(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


def _describe(frame: traceback.FrameSummary) -> str:
    return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"


def _likely_type(node: fx.Node) -> type:
    """What a traced value most likely is: a shape read gives a ``torch.Size`` or an int."""
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return torch.Size if node.target == "size" and len(node.args) == 1 else _SHAPE_METHODS[node.target]
    if node.op == "call_function" and node.target is builtins.getattr and node.args[1] == "shape":
        return torch.Size
    return torch.Tensor


def is_subclass(kind: type, cls) -> bool:
    try:
        return issubclass(kind, cls)
    except TypeError:  # a typing construct (List[Tensor]): not a plain class test
        return False


def _names_proxy(cls) -> bool:
    """Whether an isinstance() class argument names fx's Proxy."""
    classes = cls if _isinstance(cls, tuple) else (cls,)
    return any(_isinstance(c, type) and issubclass(c, fx.Proxy) for c in classes)


@contextmanager
def _flat_forward(root: nn.Module):
    """Trace a decorated forward (``def wrapper(self, *args, **kwargs)`` around the real one, as
    transformers' ``can_return_tuple`` is) through a forward with the real signature.

    fx reads the real signature (``inspect.unwrap``) but rewrites the wrapper's code to it,
    which fails; a subclass whose forward has that signature and calls the wrapper with the
    arguments the call gives (the defaults left out, as a caller leaves them out) is traced
    instead, for as long as the trace lasts.
    """
    forward = type(root).forward
    real = inspect.unwrap(forward)
    params = list(inspect.signature(real).parameters.values())[1:]
    if real is forward or any(p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) for p in params):
        yield
        return
    defaults = {p.name: p.default for p in params if p.default is not p.empty and p.kind is not p.VAR_KEYWORD}
    signature, body = [], []
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.kind is p.KEYWORD_ONLY and "*" not in signature:
            signature.append("*")
        signature.append(f"{p.name}=_defaults[{p.name!r}]" if p.name in defaults else p.name)
        body.append(f"    if {p.name} is not _defaults.get({p.name!r}, _no_default): given[{p.name!r}] = {p.name}")
    source = (f"def forward(self, {', '.join(signature)}):\n    given = {{}}\n" + "\n".join(body)
              + "\n    return _wrapped(self, **given)\n")
    scope = {"_defaults": defaults, "_no_default": object(), "_wrapped": forward}
    exec(compile(source, f"<lumos_fx: {type(root).__name__}.forward>", "exec"), scope)  # noqa: S102
    flat = type(type(root).__name__, (type(root),), {"forward": scope["forward"]})
    original, root.__class__ = root.__class__, flat
    try:
        yield
    finally:
        root.__class__ = original


class LumosTracer(ShapeConcrete, fx.Tracer):
    """fx.Tracer that records source lines, honours user leaves, and remembers where it failed.

    The functions the rules record as one op (torch_geometric's pooling and scatter) are
    auto-wrapped: fx patches them in the globals of every traced forward and, through ``_autowrap_search`` (the list
    fx fills from ``autowrap_modules``), in PyG's namespaces, without wrapping the other
    callables of those namespaces as ``autowrap_modules`` would; and in the modules of every
    called module's class and bases.

    Args:
        leaf_modules: ``Config.leaf_modules``.
        stateful: the buffers a forward updates on every call (read as graph values).
        varargs: the values the example passes to the forward's ``*args``.
    """

    def __init__(self, leaf_modules=(), stateful: frozenset[str] = frozenset(), varargs: tuple = ()) -> None:
        super().__init__(autowrap_functions=tuple(REGISTRY.one_op))
        self._autowrap_search.extend(pyg_trace.namespaces())
        self.record_stack_traces = True
        self.leaf_specs = tuple(leaf_modules)
        self.failed_in: tuple[str, str] | None = None
        self.stateful = stateful
        self.varargs = varargs
        self.assignments: dict[tuple[str, str], traceback.FrameSummary] = {}
        self.isinstance_queries: list[IsinstanceQuery] = []
        self._qualnames: dict[int, str] = {}
        self._stateful_ids: set[int] = set()

    # ---- what is a leaf ----------------------------------------------------------------
    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if any(module_matches(spec, m, module_qualified_name) for spec in self.leaf_specs):
            return True
        if module_qualified_name in getattr(self.root, "traces_into", ()):
            return False  # the module export writes out is traced, whatever its rule says
        tracing = REGISTRY.tracing(m)
        if tracing is not None:
            return tracing.function is None
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        tracing = REGISTRY.tracing(m)
        if tracing is not None and tracing.function is not None:
            forward = functools.partial(tracing.function, m)
        self._autowrap_in_classes(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # The innermost module sees the exception first: remember it, not its parents.
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise

    def _autowrap_in_classes(self, m: nn.Module) -> None:
        """The functions recorded as one op, patched in the modules of `m`'s class and its
        bases too: fx patches a module's forward's globals only, and a base class's helper
        (PyG's ``Aggregation.reduce`` calling ``scatter``) lives elsewhere."""
        patcher = _symbolic_trace.CURRENT_PATCHER
        if patcher is None:
            return
        for cls in type(m).__mro__:
            module = sys.modules.get(cls.__module__)
            if module is not None and not is_library_file(getattr(module, "__file__", None) or ""):
                _symbolic_trace._autowrap_check(patcher, vars(module), self._autowrap_function_ids)

    # ---- values --------------------------------------------------------------------------
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return LumosProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if _isinstance(proxy, LumosProxy):
            self.attach_example(proxy, kind, target, args, kwargs)
        return proxy

    def to_bool(self, obj: fx.Proxy) -> bool:
        return self.decide(obj, bool, "a condition")

    def iter(self, obj: fx.Proxy):
        return iter([obj[i] for i in range(self.decide_length(obj))])

    def create_arg(self, a):
        if _isinstance(a, dict) and type(a) is not dict and (
                dataclasses.is_dataclass(a) or (type(a) is collections.OrderedDict and all(
                    _isinstance(k, str) and k.isidentifier() for k in a))):
            # An output container that is a dict and a dataclass (transformers' ModelOutput),
            # or an OrderedDict (torchvision's segmentation models), is rebuilt with its type
            # and the fields it holds, not flattened to a dict.
            return self.create_node("call_function", type(a), (), {k: self.create_arg(v) for k, v in a.items()})
        # torch reads a NumPy scalar as a Python number and an array as a tensor.
        if _isinstance(a, np.generic):
            a = a.item()
        elif _isinstance(a, np.ndarray):
            a = torch.from_numpy(np.array(a))
        return super().create_arg(a)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if id(attr_val) in self._stateful_ids:
            self.proxy_buffer_attributes = True  # for this buffer only: its updates go into the graph
            try:
                return super().getattr(attr, attr_val, parameter_proxy_cache)
            finally:
                self.proxy_buffer_attributes = False
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def _proxy_placeholder(self, name, concrete_args, sig, fn_for_analysis):
        if name.startswith("**"):
            return {}  # the example passes no keyword arguments
        if name.startswith("*"):
            base = name[1:]
            leaves = pytree.tree_map(lambda v: PH if _isinstance(v, torch.Tensor) else v, self.varargs)
            return super()._proxy_placeholder(base, {base: leaves}, sig, fn_for_analysis)
        return super()._proxy_placeholder(name, concrete_args, sig, fn_for_analysis)

    # ---- tracing -------------------------------------------------------------------------
    def trace(self, root, concrete_args=None):
        self._qualnames = {id(m): name for name, m in root.named_modules(remove_duplicate=False)}
        self._stateful_ids = {id(t) for name, t in root.named_buffers() if name in self.stateful}
        with self._patched(root), _flat_forward(root):
            graph = super().trace(root, concrete_args)
        _self_named_self(graph, root)
        return graph

    @contextmanager
    def _patched(self, root: nn.Module):
        tracer = self
        setattr_of_module = nn.Module.__setattr__
        jit_isinstance, is_tensor = torch.jit.isinstance, torch.is_tensor

        def module_setattr(module, name, value):
            if tracer.computing_example:
                return setattr_of_module(module, name, value)
            qualname = tracer._qualnames.get(id(module))
            frame = _user_frame(1) if qualname is not None else None
            if frame is None or not tracer._assign(module, qualname, name, value, frame):
                setattr_of_module(module, name, value)

        def traced_isinstance(obj, cls, /):
            # "Is this traced?" (transformers' is_tracing) gets the true answer.
            if _isinstance(obj, fx.Proxy) and not _names_proxy(cls) and (frame := _user_frame(1)) is not None:
                return tracer._answer(obj, cls, frame)
            return _isinstance(obj, cls)

        def traced_jit_isinstance(obj, target_type):
            if _isinstance(obj, fx.Proxy) and (frame := _user_frame(1)) is not None:
                return tracer._answer(obj, target_type, frame)
            return jit_isinstance(obj, target_type)

        def traced_is_tensor(obj):
            if _isinstance(obj, fx.Proxy) and (frame := _user_frame(1)) is not None:
                return tracer._answer(obj, torch.Tensor, frame)
            return is_tensor(obj)

        with ExitStack() as stack:
            stack.enter_context(symbolic_sizes())
            for owner in _own_calls(root):
                stack.callback(setattr, owner, "__call__", owner.__call__)
                owner.__call__ = self._module_call(owner.__call__)
            for owner, name, value in ((nn.Module, "__setattr__", module_setattr),
                                       (builtins, "isinstance", traced_isinstance),
                                       (torch.jit, "isinstance", traced_jit_isinstance),
                                       (torch, "is_tensor", traced_is_tensor)):
                original = getattr(owner, name)
                setattr(owner, name, value)
                stack.callback(setattr, owner, name, original)
            yield

    def _module_call(self, call):
        """A module class's own ``__call__`` (PyG's aggregations check and complete their
        arguments there), routed through :meth:`call_module` as fx routes ``nn.Module.__call__``:
        the module may then be a leaf, or an automatic one when it cannot be traced."""
        tracer = self

        @functools.wraps(call)
        def module_call(module, *args, **kwargs):
            if tracer.computing_example or id(module) not in tracer._qualnames:
                return call(module, *args, **kwargs)
            return tracer.call_module(module, functools.partial(call, module), args, kwargs)
        return module_call

    def _answer(self, proxy: fx.Proxy, cls, frame: traceback.FrameSummary) -> bool:
        example = self.known(proxy, shape_only=False)
        kind = _likely_type(proxy.node) if example is UNKNOWN else type(example)
        answer = is_subclass(kind, cls)
        self.isinstance_queries.append(IsinstanceQuery(proxy.node, cls, answer, _describe(frame), kind))
        return answer

    def _assign(self, module: nn.Module, qualname: str, name: str, value, frame: traceback.FrameSummary) -> bool:
        """An assignment to a module attribute in user code. An assignment to a buffer the
        forward updates becomes ``buffer.copy_(value)`` in the graph (returns True: done);
        any other is recorded and carried out."""
        buffer = module._buffers.get(name)
        if buffer is not None and (_isinstance(value, fx.Proxy)
                                   or (id(buffer) in self._stateful_ids and _isinstance(value, torch.Tensor))):
            target = f"{qualname}.{name}" if qualname else name
            copy = self.create_proxy("call_method", "copy_", (self.create_proxy("get_attr", target, (), {}), value), {})
            annotate(copy.node, assignment=(Change(qualname, name, "buffer"), _describe(frame)))
            return True
        self.assignments[(qualname, name)] = frame
        return False


def _self_named_self(graph: fx.Graph, root: nn.Module) -> None:
    """fx's pytree codegen (container inputs) takes the forward's first argument for ``self``
    only where it is so named: a ``forward(this, d)`` would come out as ``forward(self, this,
    d)`` and flatten ``this`` with the inputs. The traced code's own name is ``self``."""
    info = getattr(graph._codegen, "pytree_info", None)
    if isinstance(root, nn.Module) and info is not None and info.orig_args and info.orig_args[0] != "self":
        graph._codegen.pytree_info = info._replace(orig_args=["self", *info.orig_args[1:]])
