"""Stage 1: trace a model with torch.fx and record every node's shape.

Leaf modules (called as one opaque op, not traced into): torch.nn layers (fx's default),
torch_geometric ``MessagePassing`` layers when torch_geometric is in use, and whatever the
user names in ``Config.leaf_modules``.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils.flop_counter import FlopCounterMode

from . import pyg_trace
from .config import Config, module_matches
from .decompose import TRACED_THROUGH, split_attention
from .errors import InputError, TraceError, describe_frame, user_frame_of_traceback, user_line_of_stack_trace
from .fxutil import describe, free_attr_name


class LumosTracer(fx.Tracer):
    """fx.Tracer that records source lines, honours user leaves, and remembers where it failed.

    torch_geometric's functional ops are auto-wrapped (:mod:`lumos_fx.pyg_trace`): fx patches
    them in the globals of every traced forward and, through ``_autowrap_search`` (the list
    fx fills from ``autowrap_modules``), in PyG's namespaces, without wrapping the other
    callables of those namespaces as ``autowrap_modules`` would.
    """

    def __init__(self, leaf_modules=()) -> None:
        super().__init__(autowrap_functions=pyg_trace.functions())
        self._autowrap_search.extend(pyg_trace.namespaces())
        self.record_stack_traces = True
        self.leaf_specs = tuple(leaf_modules)
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if any(module_matches(spec, m, module_qualified_name) for spec in self.leaf_specs):
            return True
        if type(m) in TRACED_THROUGH or pyg_trace.traced_through(m) is not None:
            return False
        return pyg_trace.is_leaf(m) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        through = TRACED_THROUGH.get(type(m)) or pyg_trace.traced_through(m)
        if through is not None:
            forward = functools.partial(through, m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # The innermost module sees the exception first: remember it, not its parents.
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise


class _RecordingShapeProp(ShapeProp):
    """ShapeProp that remembers the node it was running when something failed, and puts
    each node's forward FLOPs (as `counter` counts them) in ``node.meta["lumos_flops"]``."""

    current: fx.Node | None = None

    def __init__(self, gm: fx.GraphModule, counter: FlopCounterMode) -> None:
        super().__init__(gm)
        self.counter = counter

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        before = self.counter.get_total_flops()
        out = super().run_node(n)
        n.meta["lumos_flops"] = self.counter.get_total_flops() - before
        return out


def normalize_example_inputs(example_inputs) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    raise InputError(
        f"example_inputs must be a tuple of the model's positional arguments, e.g. (x,), "
        f"got {type(example_inputs).__name__}"
    )


def _concrete_args(model: torch.nn.Module, example_inputs: tuple) -> dict[str, Any]:
    """Arguments fx should specialise on: non-tensor values, and defaults not given."""
    sig = inspect.signature(model.forward)
    try:
        bound = sig.bind_partial(*example_inputs)
    except TypeError as e:
        raise InputError(
            f"example_inputs do not match {type(model).__name__}.forward{sig}: {e}. "
            f"Pass one value per positional argument of forward, e.g. example_inputs=(x,)."
        ) from None
    concrete = {}
    for name, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in bound.arguments:
            value = bound.arguments[name]
            pyg_trace.reject_data(value, name, model)
            if not isinstance(value, torch.Tensor):
                concrete[name] = value
        elif param.default is not param.empty:
            concrete[name] = param.default
        else:
            raise InputError(
                f"example_inputs give no value for argument '{name}' of "
                f"{type(model).__name__}.forward{sig}; pass it in example_inputs."
            )
    return concrete


def _trace_error(e: Exception, tracer: LumosTracer, model: torch.nn.Module) -> TraceError:
    frame = user_frame_of_traceback(e.__traceback__)
    lines = [f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}"]
    if frame is not None:
        lines.append(f"  at {describe_frame(frame)}")
    if tracer.failed_in is not None:
        qualname, cls = tracer.failed_in
        lines.append(f"  inside module '{qualname}' ({cls})")
        lines.append(
            "fix: let fx call that module as one opaque op instead of tracing into it:\n"
            f"  lumos_fx.instrument(model, example_inputs, "
            f"config=lumos_fx.Config(leaf_modules=['{qualname}']))\n"
            "  (the channels it touches are then kept, not pruned)"
        )
    else:
        lines.append(
            "fix: the failing code is in the model's own forward; move the data-dependent part "
            "(Python control flow on tensor values, calls into non-torch code) into a submodule "
            "and name it in lumos_fx.Config(leaf_modules=[...]), or wrap the function with "
            "torch.fx.wrap."
        )
    return TraceError("\n".join(lines))


_FUNCTIONAL_DROPOUT = {
    F.dropout: nn.Dropout, F.alpha_dropout: nn.AlphaDropout, F.feature_alpha_dropout: nn.FeatureAlphaDropout,
    F.dropout1d: nn.Dropout1d, F.dropout2d: nn.Dropout2d, F.dropout3d: nn.Dropout3d,
}


def _trace_in_mode(model: torch.nn.Module, training: bool, config: Config, concrete: dict,
                   stack_traces: bool = True) -> fx.Graph:
    model.train(training)
    tracer = LumosTracer(config.leaf_modules)
    tracer.record_stack_traces = stack_traces
    try:
        return tracer.trace(model, concrete_args=concrete or None)
    except Exception as e:  # fx raises many types; every one becomes a TraceError
        raise _trace_error(e, tracer, model) from e


def _follow_training_flag(root: torch.nn.Module, train: fx.Graph, evaluation: fx.Graph) -> None:
    """Make `train` follow the module's training flag where fx froze ``self.training``.

    ``F.dropout(x, p, training=self.training)`` is traced as a constant; it becomes an
    ``nn.Dropout(p)`` submodule, which follows ``.train()``/``.eval()``. Any other
    difference between the train-mode and eval-mode traces is Python control flow on
    ``self.training`` that one GraphModule cannot hold.
    """
    a_nodes, b_nodes = list(train.nodes), list(evaluation.nodes)
    frozen = []
    for a, b in zip(a_nodes, b_nodes):
        if a.format_node() == b.format_node():
            continue
        if not (a.op == b.op == "call_function" and a.target is b.target and a.target in _FUNCTIONAL_DROPOUT):
            _raise_mode_dependent(a)
        frozen.append(a)
    if len(a_nodes) != len(b_nodes):
        _raise_mode_dependent(a_nodes[min(len(a_nodes), len(b_nodes)) - 1])
    for a in frozen:
        name = free_attr_name(root, f"{a.name}_module")
        p = a.args[1] if len(a.args) > 1 else a.kwargs.get("p", 0.5)
        inplace = a.args[3] if len(a.args) > 3 else a.kwargs.get("inplace", False)
        root.add_module(name, _FUNCTIONAL_DROPOUT[a.target](p, inplace))
        with train.inserting_before(a):
            module_call = train.call_module(name, (a.args[0],))
        module_call.meta, module_call.stack_trace = a.meta, a.stack_trace
        a.replace_all_uses_with(module_call)
        train.erase_node(a)


def _raise_mode_dependent(node: fx.Node):
    where = user_line_of_stack_trace(node.stack_trace)
    raise TraceError(
        "the model's forward takes different paths in train and eval mode (Python control flow on "
        f"self.training){f' near {where}' if where else ''}; one traced graph cannot hold both.\n"
        "fix: move that code into a submodule that fx calls as one op: "
        "lumos_fx.Config(leaf_modules=[...])."
    )


def _propagate(gm: fx.GraphModule, model: torch.nn.Module, example_inputs: tuple) -> int:
    """ShapeProp on `example_inputs` in eval mode, without gradients; the forward's FLOPs."""
    flops = FlopCounterMode(display=False)
    prop = _RecordingShapeProp(gm, flops)
    gm.eval()
    try:
        with torch.no_grad(), flops:
            prop.propagate(*example_inputs)
    except Exception as e:
        given = ", ".join(
            f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else repr(x) for x in example_inputs
        )
        where = describe(prop.current, gm) if prop.current is not None else "the model"
        cause = e.__cause__ if e.__cause__ is not None else e
        raise InputError(
            f"example_inputs do not run through {type(model).__name__}: at {where}:\n"
            f"  {type(cause).__name__}: {cause}\n"
            f"  example_inputs: ({given})\n"
            "fix: pass inputs the model accepts, so that model(*example_inputs) runs."
        ) from None
    finally:
        gm.train(model.training)
    return int(flops.get_total_flops())


def trace(model: torch.nn.Module, example_inputs, config: Config) -> fx.GraphModule:
    """Trace a copy of `model` and annotate every node with ShapeProp's tensor metadata.

    The model is not modified: tracing and shape propagation run on a deep copy (shape
    propagation in eval mode, without gradients); the copy keeps the model's training flag.
    The FLOPs of that forward (``FlopCounterMode``) go to ``gm.meta["lumos_example_flops"]``.
    ``nn.MultiheadAttention`` calls are then written out (:mod:`lumos_fx.decompose`).
    """
    example_inputs = normalize_example_inputs(example_inputs)
    if pyg_trace.loaded():
        pyg_trace.register_rules()
    concrete = _concrete_args(model, example_inputs)
    root = copy.deepcopy(model)
    graph = _trace_in_mode(root, True, config, concrete)
    # The eval-mode graph is only compared with the train-mode one: no source lines needed.
    _follow_training_flag(root, graph, _trace_in_mode(root, False, config, concrete, stack_traces=False))
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__)

    gm.meta["lumos_example_flops"] = _propagate(gm, model, example_inputs)
    if split_attention(gm):
        gm.meta["lumos_example_flops"] = _propagate(gm, model, example_inputs)
    return gm
