"""Stage 1: trace a model with torch.fx, check the trace, and record every node's shape.

The model is never modified: a deep copy is traced (:class:`lumos_fx.tracer.LumosTracer`)
in train and in eval mode, and the two graphs compared. Before that, another copy runs twice
on copies of the example inputs (:func:`lumos_fx.side_effects.observe`), so the trace knows
which buffers forward updates (their updates go into the graph) and which Python state it
changes (refused: the graph cannot hold it). ``ShapeProp`` then runs the graph once, and the
run is checked against the model's (:mod:`lumos_fx.fidelity`): outputs, buffers, the
``isinstance`` answers fx took. lumos_fx's own runs leave the graph's state as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
import weakref
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.graph import CodeGen
from torch.fx.node import map_arg
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import FlopCounterMode

from . import caches, fidelity, modes, pyg_trace
from .config import Config, check_module_names
from .errors import InputError, TraceError, describe_frame, user_frame_of_traceback, user_line_of_stack_trace
from .fxutil import describe, free_attr_name, owner_module
from .inputs import BoundInputs, bind, fresh
from .node_info import annotate
from .rules import REGISTRY, register_library_rules
from .side_effects import (Change, Observation, buffer_values, changed, fingerprint, observe, preserved, rng_devices,
    source_line)
from .tracer import IsinstanceQuery, LumosTracer
from .verify import eval_mode


def _base(t: torch.Tensor) -> torch.Tensor:
    return t._base if t._base is not None else t


class _Caught(fx.Interpreter):
    """The run under ShapeProp: a failing node's exception is held and returned as None, so
    that ShapeProp, which prints the traceback to stderr, never sees it; lumos_fx reports the
    failure in one message."""

    failure: Exception | None = None

    def run_node(self, n: fx.Node) -> Any:
        try:
            return super().run_node(n)
        except Exception as e:
            self.failure = e
            return None


class _RecordingShapeProp(ShapeProp, _Caught):
    """ShapeProp that remembers the node it was running when something failed, puts each
    node's forward FLOPs (as `counter` counts them) in its record (:mod:`.node_info`), and
    records in-place writes: a node that wrote one of its input tensors (its version
    counter moved) gets ``writes``, the names of the nodes whose values share
    the written tensor's storage (a view of it, or its base). prune keeps such a write, and
    never folds a value into a constant that a later op reads after the write.
    """

    current: fx.Node | None = None
    skip: set[fx.Node] = frozenset()  # nodes not run (None stands for their values)

    def __init__(self, gm: fx.GraphModule, counter: FlopCounterMode) -> None:
        super().__init__(gm)
        self.counter = counter
        self.bases: dict[fx.Node, weakref.ref] = {}  # weak: a freed tensor aliases nothing

    def run_node(self, n: fx.Node) -> Any:
        if n in self.skip:
            return None
        self.current = n
        before = self.counter.get_total_flops()
        inputs = [self.env[a] for a in n.all_input_nodes if isinstance(self.env.get(a), torch.Tensor)]
        versions = [t._version for t in inputs]
        result = super().run_node(n)
        if self.failure is not None:
            n.meta.pop("type", None)  # ShapeProp recorded the None that stood in for the failure
            raise self.failure
        written = [_base(t) for t, v in zip(inputs, versions) if t._version != v]
        if written:
            annotate(n, writes=tuple(node.name for node, ref in self.bases.items() if any(ref() is w for w in written)))
        if isinstance(result, torch.Tensor):
            self.bases[n] = weakref.ref(_base(result))
        annotate(n, flops=self.counter.get_total_flops() - before)
        return result


def _trace_error(e: Exception, tracer: LumosTracer, model: torch.nn.Module) -> TraceError:
    frame = user_frame_of_traceback(e.__traceback__)
    lines = [f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}"]
    if frame is not None:
        lines.append(f"  at {describe_frame(frame)}")
    if "__array_ufunc__" in str(e):
        lines.append("  a NumPy function got a traced tensor: use the torch function (torch.sqrt for np.sqrt)")
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


class _FailedInSubmodule(Exception):
    """Tracing failed inside submodule `qualname` (the innermost one the error crossed)."""

    def __init__(self, qualname: str, error: TraceError, reason: str) -> None:
        super().__init__(reason)
        self.qualname, self.error, self.reason = qualname, error, reason


def _trace_in_mode(model: torch.nn.Module, training: bool, config: Config, bound: BoundInputs,
                   stateful: frozenset[str], stack_traces: bool = True, leaves: tuple = ()) -> LumosTracer:
    model.train(training)
    tracer = LumosTracer(tuple(config.leaf_modules) + leaves, stateful, bound.varargs)
    tracer.record_stack_traces = stack_traces
    tracer.start_examples(fresh(bound.examples))
    # The examples run the model's ops for real (on copies of its tensors): its Python state
    # and the random stream are put back afterwards.
    try:
        with preserved(model, tensors=False), torch.random.fork_rng(rng_devices(model)):
            tracer.trace(model, concrete_args=bound.concrete or None)
    except Exception as e:  # fx raises many types; every one becomes a TraceError
        error = _trace_error(e, tracer, model)
        if tracer.failed_in is not None and tracer.failed_in[0]:
            frame = user_frame_of_traceback(e.__traceback__)
            first = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            reason = f"{first} (at {describe_frame(frame)})" if frame is not None else first
            raise _FailedInSubmodule(tracer.failed_in[0], error, reason) from e
        raise error from e
    return tracer


class _Traced(NamedTuple):
    root: nn.Module  # the copy the train-mode trace ran on (the GraphModule's root)
    tracer: LumosTracer
    twin: nn.Module  # the copy the eval-mode trace ran on
    evaluation: LumosTracer
    start: dict  # fingerprint of `root` before tracing
    flags: dict[int, bool]  # each module of `root`'s training flag before tracing
    auto_leaves: dict[str, str]  # submodules made leaves, with the reason
    parting: fx.Node | None  # the first train-mode node of another path than eval mode's, if any


class _Divergent(Exception):
    """The two traces take different paths from train-mode node `node` on."""

    def __init__(self, node: fx.Node) -> None:
        super().__init__(node.name)
        self.node = node


def _trace_both(model: nn.Module, twin: nn.Module, config: Config, bound: BoundInputs,
                stateful: frozenset[str], forgotten: list[caches.Cache] = ()) -> _Traced:
    """Trace a copy of `model` in train mode and `twin` in eval mode, both with the
    `forgotten` caches emptied (:mod:`lumos_fx.caches`). A submodule fx cannot
    trace into becomes a leaf (``Config.auto_leaves``), and both are traced again from fresh
    copies of `model`: a failed trace may have left proxies in the modules' attributes.
    Where the modes differ in numbers only, the train-mode graph follows the flag; where
    they take different paths in a submodule without parameters or buffers, it becomes a
    leaf; elsewhere both graphs are returned as they are."""
    leaves: dict[str, str] = {}
    while True:
        root = copy.deepcopy(model)
        for copy_ in (root, twin):
            caches.forget(copy_, forgotten)
        start, flags = fingerprint(root), {id(m): m.training for m in root.modules()}
        try:
            train = _trace_in_mode(root, True, config, bound, stateful, leaves=tuple(leaves))
            # It traces another copy, so that the constants fx stores on the root get the
            # same names in both graphs.
            evaluation = _trace_in_mode(twin, False, config, bound, stateful, stack_traces=False,
                                        leaves=tuple(leaves))
            try:
                _follow_training_flag(root, train.graph, twin, evaluation.graph)
            except _Divergent as divergent:
                owner = owner_module(divergent.node)
                if not (config.auto_leaves and owner and owner not in leaves and _holds_nothing(model, owner)):
                    return _Traced(root, train, twin, evaluation, start, flags, leaves, divergent.node)
                # Drop path, noise: nothing to cut inside, and as one op (which scales whole
                # samples or keeps its channels) it leaves one copy of all that follows.
                where = user_line_of_stack_trace(divergent.node.stack_trace)
                leaves[owner] = f"takes different paths in train and eval mode (near {where})"
                twin = copy.deepcopy(model)
                continue
            return _Traced(root, train, twin, evaluation, start, flags, leaves, None)
        except _FailedInSubmodule as failed:
            if not config.auto_leaves or failed.qualname in leaves:
                raise failed.error from failed.__cause__
            leaves[failed.qualname] = failed.reason
            twin = copy.deepcopy(model)


def _holds_nothing(model: nn.Module, qualname: str) -> bool:
    """Whether submodule `qualname` has no parameters and no buffers."""
    module = model.get_submodule(qualname)
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None


def _train_only_count(node: fx.Node) -> dict[int, tuple] | None:
    """For a step counter only train mode advances (``self.num_batches_tracked.add_(1)``, as
    BatchNorm-like layers written out in Python count batches): the step, as
    :func:`_differing_numbers` gives it (train value, eval value 0), which makes the update
    follow the flag; None for any other node."""
    if not (node.op == "call_method" and node.target in ("add_", "sub_") and not node.users and not node.kwargs
            and len(node.args) == 2 and isinstance(node.args[0], fx.Node) and node.args[0].op == "get_attr"):
        return None
    step = node.args[1]
    return {1: (step, 0)} if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def _follow_training_flag(root: torch.nn.Module, train: fx.Graph, twin: nn.Module, evaluation: fx.Graph) -> None:
    """Make `train` follow the module's training flag where fx froze ``self.training``.

    ``F.dropout(x, p, training=self.training)`` is traced as a constant; it becomes an
    ``nn.Dropout(p)`` submodule, which follows ``.train()``/``.eval()``. Any other
    difference between the train-mode trace (of `root`) and the eval-mode trace (of a copy,
    `twin`) is Python control flow on ``self.training``: :class:`_Divergent`, raised before
    `train` is changed.
    """
    a_nodes, b_nodes = list(train.nodes), list(evaluation.nodes)
    frozen, switched = [], []
    i = j = 0
    while i < len(a_nodes):
        a, b = a_nodes[i], b_nodes[j] if j < len(b_nodes) else None
        i += 1
        if b is not None and _same_op(a, b) and modes.same_attribute(a, root, b, twin):
            j += 1
            continue
        if b is not None and a.op == b.op == "call_function" and a.target is b.target and a.target in _FUNCTIONAL_DROPOUT:
            frozen.append(a)
            j += 1
            continue
        differing = _differing_numbers(a, b) if b is not None else None
        if differing is not None:
            switched.append((a, differing))
            j += 1
            continue
        count = _train_only_count(a)
        if count is not None:
            switched.append((a, count))
            continue
        if a.op == "get_attr" and a.users and all(_train_only_count(u) is not None for u in a.users):
            continue  # the buffer such an update reads
        raise _Divergent(a)
    if j != len(b_nodes):
        raise _Divergent(a_nodes[-1])
    for a, differing in switched:
        _follow_flag_in_args(train, a, differing)
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


class Modes(NamedTuple):
    """A module traced for export: `train` is its graph in train mode, which also follows
    the module's flag where the modes differ in numbers only; `eval` its eval-mode graph
    where they take different paths (None otherwise); `leaves` the submodules fx could not
    trace into, with the reason."""

    train: fx.GraphModule
    eval: fx.GraphModule | None
    leaves: dict[str, str]


def trace_modes(module: nn.Module, args: tuple) -> Modes:
    """Trace `module` (a leaf of a traced model) on the values `args` it is called with, in
    both modes. Its own untraceable submodules are leaves of the result, as in :func:`trace`."""
    bound = bind(module, args)
    traced = _trace_both(module, copy.deepcopy(module), Config(), bound, frozenset())
    flags = {name: m.training for name, m in module.named_modules()}
    graphs = []
    for copy_, tracer in ((traced.root, traced.tracer), (traced.twin, traced.evaluation))[:1 + (traced.parting is not None)]:
        for name, m in copy_.named_modules():
            m.training = flags.get(name, m.training)  # a module the forward made (PyG dropout_module)
        if bound.var_positional or bound.var_keyword:
            _flat_signature(tracer.graph)
        graphs.append(fx.GraphModule(copy_, tracer.graph, class_name=type(module).__name__))
    return Modes(graphs[0], graphs[1] if traced.parting is not None else None, traced.auto_leaves)


def _same_op(a: fx.Node, b: fx.Node) -> bool:
    """The same op on the same inputs (how many read it may differ: the other path's)."""
    def call(n: fx.Node):
        return n.op, n.target, map_arg((n.args, n.kwargs), lambda x: x.name)

    return a.name == b.name and call(a) == call(b)


def _differing_numbers(a: fx.Node, b: fx.Node) -> dict[int, tuple] | None:
    """The arguments in which the train-mode node `a` and the eval-mode node `b` differ, by
    position among the flattened arguments, when they are the same op on the same inputs and
    differ in numbers or flags only (``dropout_p=self.p if self.training else 0.0``); else None."""
    if a.op != b.op or a.target != b.target:
        return None
    (leaves_a, spec_a), (leaves_b, spec_b) = (pytree.tree_flatten((n.args, n.kwargs)) for n in (a, b))
    if spec_a != spec_b:
        return None
    differing = {}
    for i, (x, y) in enumerate(zip(leaves_a, leaves_b)):
        if isinstance(x, fx.Node) or isinstance(y, fx.Node):
            if not (isinstance(x, fx.Node) and isinstance(y, fx.Node) and x.name == y.name):
                return None
        elif x != y:
            if not (isinstance(x, (bool, int, float)) and isinstance(y, (bool, int, float))):
                return None
            differing[i] = (x, y)
    return differing or None


def _follow_flag_in_args(graph: fx.Graph, node: fx.Node, differing: dict[int, tuple]) -> None:
    """Compute each differing argument of `node` from the training flag of the module that
    called it: a flag itself (``training=self.training``), or ``eval + (train - eval) *
    training`` for a number, so that one graph follows ``.train()`` / ``.eval()``."""
    owner = owner_module(node)
    leaves, spec = pytree.tree_flatten((node.args, node.kwargs))
    with graph.inserting_before(node):
        flag = graph.get_attr(f"{owner}.training" if owner else "training")
        for i, (train, evaluation) in differing.items():
            if isinstance(train, bool) and isinstance(evaluation, bool):
                leaves[i] = flag if train else graph.call_function(operator.not_, (flag,))
            else:
                leaves[i] = graph.call_function(operator.add, (evaluation, graph.call_function(
                    operator.mul, (train - evaluation, flag))))
    node.args, node.kwargs = pytree.tree_unflatten(leaves, spec)


def _flat_signature(graph: fx.Graph) -> None:
    """Give a forward with ``*args`` / ``**kwargs`` a flat signature, one argument per
    placeholder (``forward(self, x, args_1, args_2)``: called as the model is).

    fx flattens ``*args`` as a tuple with pytree code that expects the tuple itself; with
    plain code generation the output structure moves into the output node.
    """
    info = getattr(graph._codegen, "pytree_info", None)
    graph._codegen = CodeGen()
    if info is not None and info.out_spec is not None:
        output = next(n for n in graph.nodes if n.op == "output")
        output.args = (pytree.tree_unflatten(list(output.args[0]), info.out_spec),)


def _propagate(gm: fx.GraphModule, model: torch.nn.Module, bound: BoundInputs,
               queries: list[IsinstanceQuery] = ()) -> tuple[int, Any]:
    """ShapeProp on the example inputs in eval mode, without gradients: the forward's FLOPs
    and its output. A run that fails is an InputError, unless a decision the trace took
    (an isinstance answer, a buffer assignment) explains it."""
    flops = FlopCounterMode(display=False)
    prop = _RecordingShapeProp(gm, flops)
    prop.skip = modes.train_only(gm.graph)
    prop.garbage_collect_values = not prop.skip
    try:
        with torch.no_grad(), eval_mode(gm), flops:
            output = prop.propagate(*fresh(bound.args))
            total = flops.get_total_flops()
            if prop.skip:
                # The train-mode path's own nodes, after the eval-mode ones (whose values they
                # read) and with the state put back: their in-place updates must reach neither
                # the eval-mode values nor the state the run is checked against.
                env = {n: v for n, v in prop.env.items() if n not in prop.skip and n.op != "output"}
                prop.skip = set()
                with preserved(gm):
                    prop.run(*fresh(bound.args), initial_env=env)
    except Exception as e:
        fidelity.check_isinstance(gm, queries)
        fidelity.check_assignments(gm)
        given = ", ".join(
            f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else repr(x) for x in bound.args
        )
        where = describe(prop.current, gm) if prop.current is not None else "the model"
        cause = e.__cause__ if e.__cause__ is not None else e
        if _runs(model, bound):
            raise TraceError(
                f"the traced graph of {type(model).__name__} fails on example_inputs where the model itself runs: "
                f"at {where}:\n  {type(cause).__name__}: {cause}\n"
                "the trace took a path the model does not take there; please report this model, and meanwhile "
                "name the module in lumos_fx.Config(leaf_modules=[...])."
            ) from None
        raise InputError(
            f"example_inputs do not run through {type(model).__name__}: at {where}:\n"
            f"  {type(cause).__name__}: {cause}\n"
            f"  example_inputs: ({given})\n"
            "fix: pass inputs the model accepts, so that model(*example_inputs) runs."
        ) from None
    return int(total), output


def _runs(model: nn.Module, bound: BoundInputs) -> bool:
    """Whether a copy of `model` runs on the example inputs in eval mode."""
    twin = copy.deepcopy(model).eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(rng_devices(model)):
            twin(*fresh(bound.args))
    except Exception:
        return False
    return True


def _refuse_lazy(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            raise InputError(
                f"module '{name or type(model).__name__}' ({type(module).__name__}) has not initialised its "
                "parameters yet.\nfix: call the model once on an input (model(*example_inputs)) before "
                "lumos_fx.instrument(), so that lazy modules know their sizes."
            )


def _where(model: nn.Module, bound: BoundInputs, tracer: LumosTracer):
    return lambda change: source_line(model, bound.args, change, tracer.assignments)


def _refuse_traced_changes(model: nn.Module, bound: BoundInputs, start: dict, root: nn.Module,
                           tracer: LumosTracer) -> None:
    """A buffer or parameter that changed while fx traced the model was changed in Python,
    outside the graph, which will not repeat it."""
    for change in changed(start, fingerprint(root)):
        if change.kind == "attribute":
            continue
        line = _where(model, bound, tracer)(change)
        raise TraceError(
            f"forward of {type(model).__name__} changed {change.kind} '{change.qualname}' in Python while "
            f"lumos_fx traced it{f' (at {line})' if line else ''}: the traced graph would not repeat that change.\n"
            "fix: if this initialises state on the first call, call the model once before lumos_fx.instrument(); "
            "otherwise update it with a tensor operation on the attribute (self.m.mul_(0.9), "
            "self.m = self.m + ...) so that the graph holds the update."
        )


def _in_a_leaf(gm: fx.GraphModule, qualname: str) -> bool:
    """Whether `qualname` lies in a module the graph calls as one op (which runs as it is)."""
    return any(qualname == n.target or qualname.startswith(n.target + ".")
               for n in gm.graph.nodes if n.op == "call_module")


def _refuse_python_state(model: nn.Module, bound: BoundInputs, gm: fx.GraphModule, changes: list[Change],
                         tracer: LumosTracer) -> None:
    """Python attributes a call changes every time, outside the leaves."""
    for change in changes:
        if change.kind != "attribute" or _in_a_leaf(gm, change.module):
            continue
        line = _where(model, bound, tracer)(change)
        owner = f"module '{change.module}'" if change.module else type(model).__name__
        leaf_fix = (f"name the module in lumos_fx.Config(leaf_modules=['{change.module}']), so that it runs as "
                    "it is" if change.module else "move the code into a submodule named in Config(leaf_modules=[...])")
        raise TraceError(
            f"forward changes Python state: {owner} sets self.{change.attr} on every call"
            f"{f' (at {line})' if line else ''}. The traced graph holds tensor operations only, so the "
            "instrumented and the pruned model would not do it.\n"
            f"fix: keep such state out of forward (count calls or keep the last value in your training loop), "
            f"store tensors in a registered buffer updated in place, or {leaf_fix}."
        )


def _check_run(model: nn.Module, gm: fx.GraphModule, bound: BoundInputs, observed: Observation,
               trained: Observation, tracer: LumosTracer) -> int:
    """ShapeProp, then every check of the run against the model's, in eval and in train
    mode; the graph's state is put back as it was. Returns the forward's FLOPs."""
    before = fingerprint(gm)
    buffers = buffer_values(gm)
    params = [c.qualname for c in observed.per_call + trained.per_call if c.kind == "parameter"]
    with preserved(gm, params):
        flops, output = _propagate(gm, model, bound, tracer.isinstance_queries)
        if observed.error is not None:
            frame = user_frame_of_traceback(observed.error.__traceback__)
            raise InputError(
                f"{type(model).__name__}(*example_inputs) raises {type(observed.error).__name__}: {observed.error}"
                f"{f' at {describe_frame(frame)}' if frame else ''}\n"
                "fix: pass inputs the model accepts, so that model(*example_inputs) runs."
            )
        fidelity.check_isinstance(gm, tracer.isinstance_queries)
        fidelity.check_assignments(gm)
        fidelity.check_output(model, gm, observed, output, tracer.isinstance_queries, tracer.assignments)
        fidelity.check_state(model, gm, observed, before, _where(model, bound, tracer), buffers)
    fidelity.check_train_mode(model, gm, trained, bound.args, tracer.isinstance_queries, tracer.assignments,
                              _where(model, bound, tracer), params)
    return flops


def _join_modes(model: nn.Module, traced: _Traced, config: Config, bound: BoundInputs, stateful: frozenset[str],
                forgotten: list[caches.Cache]) -> None:
    """Join the eval-mode trace into the train-mode one (:func:`lumos_fx.modes.join`): the
    eval-mode trace again, from a fresh copy, with source lines for its own nodes; its
    isinstance answers and assignments join the train-mode tracer's."""
    twin = copy.deepcopy(model)
    caches.forget(twin, forgotten)
    evaluation = _trace_in_mode(twin, False, config, bound, stateful, leaves=tuple(traced.auto_leaves))
    tracer = traced.tracer
    if bound.var_positional or bound.var_keyword:
        for graph in (tracer.graph, evaluation.graph):
            _flat_signature(graph)
    where = user_line_of_stack_trace(traced.parting.stack_trace) or f"{type(model).__name__}.forward"
    env = modes.join(traced.root, tracer.graph, twin, evaluation.graph, where)
    tracer.isinstance_queries += [dataclasses.replace(q, node=env[q.node]) for q in evaluation.isinstance_queries
                                  if q.node in env]
    tracer.assignments.update(evaluation.assignments)


def _write_out(gm: fx.GraphModule) -> bool:
    """Let every module call's rule write it out; True if any did."""
    changed = False
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            rule = REGISTRY.module_rule(gm.get_submodule(node.target))
            changed = rule is not None and rule.write_out(node, gm) or changed
    if changed:
        gm.graph.lint()
        gm.recompile()
    return changed


def trace(model: torch.nn.Module, example_inputs, config: Config) -> fx.GraphModule:
    """Trace a copy of `model`, check the trace on the example inputs, and annotate every
    node with ShapeProp's tensor metadata.

    The FLOPs of the forward (``FlopCounterMode``) go to ``gm.meta["lumos_example_flops"]``,
    the input leaves (:class:`lumos_fx.inputs.InputLeaf`) to ``gm.meta["lumos_inputs"]``, the
    buffers and parameters forward updates to ``gm.meta["lumos_stateful"]``.
    Calls whose rule writes them out (``nn.MultiheadAttention``:
    :meth:`~lumos_fx.rules.api.ModuleRule.write_out`) are then replaced by the ops they compute.
    """
    bound = bind(model, example_inputs)
    check_module_names(config.leaf_modules, model, "leaf_modules")
    check_module_names(list(config.round_to_modules), model, "round_to_modules")
    _refuse_lazy(model)
    observed, trained, twin = observe(model, bound.args)
    # After the eager run: a forward may import its library itself, first in that run.
    if pyg_trace.loaded():
        pyg_trace.register_rules()
    register_library_rules()
    # Read as graph values while tracing (harmless for buffers only a leaf reads: BatchNorm's).
    stateful = frozenset(c.qualname for c in observed.per_call + trained.per_call if c.kind != "attribute")
    forgotten = caches.find(model, bound.args, observed)
    traced = _trace_both(model, twin, config, bound, stateful, forgotten=forgotten)
    root, tracer, start, flags, auto_leaves = traced.root, traced.tracer, traced.start, traced.flags, traced.auto_leaves
    if traced.parting is not None:
        _join_modes(model, traced, config, bound, stateful, forgotten)
    elif bound.var_positional or bound.var_keyword:
        _flat_signature(tracer.graph)
    _refuse_traced_changes(model, bound, start, root, tracer)
    for module in root.modules():  # each module's own flag, as in the model
        module.training = flags.get(id(module), model.training)
    gm = fx.GraphModule(root, tracer.graph, class_name=type(model).__name__)
    _refuse_python_state(model, bound, gm, observed.per_call + trained.per_call, tracer)
    for node, leaf in zip((n for n in gm.graph.nodes if n.op == "placeholder"), bound.leaves):
        annotate(node, input=leaf.name)
    gm.meta["lumos_inputs"] = bound.leaves
    gm.meta["lumos_auto_leaves"] = auto_leaves
    gm.meta["lumos_stateful"] = frozenset(q for q in stateful if not _in_a_leaf(gm, q))
    gm.meta["lumos_example_flops"] = _check_run(model, gm, bound, observed, trained, tracer)
    if _write_out(gm):
        with preserved(gm):
            gm.meta["lumos_example_flops"] = _propagate(gm, model, bound)[0]
    return gm
