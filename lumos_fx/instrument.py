"""Stage 3: put one hard-concrete gate per prunable group in front of the group's consumers."""

from __future__ import annotations

import operator
import re
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch
from torch import fx, nn

from .analyze import analyze
from .budget import attach_budget
from .channels import slug
from .config import Config
from .costs import CostModel, parameter_flops
from .errors import InputError
from .freeze import freeze
from .fxutil import input_name, module_device, shape_of
from .gate import Gate, GateBank
from .gate_fold import fold, foldable, folds_at_producer
from .inputs import fresh, normalize_example_inputs
from .latency import measure as measure_latency
from .latency_calibration import calibrate as calibrate_latency
from .node_info import GateRole, annotate
from .plan import GATES, Plan
from .trace import trace


def instrument(model: nn.Module, example_inputs, *, feature_names=None, config: Config | None = None) -> fx.GraphModule:
    """Trace `model`, find its channel groups and gate them.

    Args:
        model: any ``nn.Module``; it is not modified (the result owns a copy of its weights).
        example_inputs: a tuple of the forward's positional arguments, e.g. ``(x,)``.
        feature_names: names of the input features: a list for a model with one input, or a
            dict ``{argument name: list}``. Defaults to ``x[0], x[1], ...``.
        config: a :class:`lumos_fx.Config`.

    Returns:
        a ``torch.fx.GraphModule`` with the model's call signature. Its gates start open, so
        in eval mode it computes what `model` computes. It trains with any optimizer (see
        :func:`lumos_fx.param_groups`), moves with ``.to()``, and saves with ``state_dict()``.
    """
    _refuse_instrumented(model)
    config = config or Config()
    if config.distill is not None:  # a frozen copy, before anything else could touch the weights
        config = replace(config, distill=config.distill.with_teacher_of(model))
    gm = trace(model, example_inputs, config)
    freeze(gm, model, config.frozen)
    channels = analyze(gm)
    plan = replace(
        channels,
        config=config,
        example_flops=gm.meta.pop("lumos_example_flops"),
        auto_leaves=gm.meta.pop("lumos_auto_leaves"),
        example_inputs=fresh(normalize_example_inputs(example_inputs)),  # the user's tensors stay theirs
        feature_names=_feature_names(gm, channels, feature_names, getattr(model, "input_features", {})),
        gate_keys=_gate_keys(channels),
        cost=CostModel(channels),
        flop_cost=CostModel(channels, parameter_flops(gm, channels)),  # before the gates fold into weights
    )
    if config.target_latency is not None:  # timed on the dense graph, before the gates
        plan = replace(plan, latency_cost=measure_latency(gm, plan, plan.example_inputs, config.latency_batch))
    _insert_gates(gm, plan, config)
    gm.meta["lumos"] = plan
    if config.budget is not None:
        attach_budget(gm, config)
    gm.meta["lumos_class_name"] = type(model).__name__
    gm.graph.lint()
    gm.recompile()
    if config.target_latency is not None:
        calibrate_latency(gm)
    return gm


def _refuse_instrumented(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"instrument() takes an nn.Module, got {type(model).__name__}")
    if isinstance(model, fx.GraphModule) and "lumos" in model.meta or hasattr(model, GATES):
        raise InputError(
            "this model was already instrumented by lumos_fx (it holds gates): train it and call "
            "lumos_fx.prune(wrapped), or instrument the original model. To prune a pruned model again, "
            "instrument the model lumos_fx.prune() returned."
        )


def _feature_names(gm: fx.GraphModule, plan: Plan, feature_names, inherited: dict) -> dict[str, list[str]]:
    """Column names per input node: the user's, else those a pruned model kept of its own
    inputs (``pruned.input_features``, so a model pruned again keeps naming them), else
    ``x[0], x[1], ...``."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder" and plan.space_of(n.name) is not None]
    names_of = {input_name(n): n for n in inputs}
    if feature_names is not None and not isinstance(feature_names, dict):
        if len(inputs) != 1:
            raise InputError(
                f"the model has {len(inputs)} tensor inputs; give feature_names as a dict "
                f"{{input name: [names]}} with input names from {list(names_of)}"
            )
        feature_names = {input_name(inputs[0]): feature_names}
    feature_names = dict(feature_names or {})
    unknown = set(feature_names) - set(names_of)
    if unknown:
        raise InputError(f"feature_names names inputs {sorted(unknown)}; the model's inputs are {list(names_of)}")
    out = {}
    for name, node in names_of.items():
        size = plan.space_of(node.name).size
        default = inherited.get(name) if len(inherited.get(name, ())) == size else None
        names = [str(n) for n in feature_names.get(name, default or [f"{name}[{j}]" for j in range(size)])]
        if len(names) != size:
            raise InputError(f"feature_names for input '{name}' has {len(names)} names; "
                             f"the input has {size} features")
        out[node.name] = names
    return out


def _gate_keys(plan: Plan) -> dict[int, str]:
    """Group id -> the name of its gate in the gate bank, one per prunable group."""
    taken: set[str] = set()
    return {group.id: _gate_key(group.name, taken) for group in plan.groups if group.prunable}


def _gate_key(name: str, taken: set[str]) -> str:
    key = re.sub(r"\W", "_", name) or "group"
    base, i = key, 1
    while key in taken:
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


def _insert_gates(gm: fx.GraphModule, plan: Plan, config: Config) -> None:
    """One call of the gate bank right after the inputs (one sample per gate per forward,
    shared by all the group's consumers), and ``input * z`` in front of each consumer.

    Every inserted node has a :class:`~lumos_fx.node_info.GateRole` in its record, so prune() can take it out again.
    """
    if hasattr(gm, GATES):
        raise InputError(f"the model already has an attribute '{GATES}'; lumos_fx needs that name")
    modules = GateBank()
    device = module_device(gm)
    gm.add_submodule(GATES, modules)
    nodes = {n.name: n for n in gm.graph.nodes}
    position = {n: i for i, n in enumerate(gm.graph.nodes)}
    last_input = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    gated: dict[tuple[str, int], fx.Node] = {}
    for gid, key in plan.gate_keys.items():
        group = plan.groups[gid]
        modules[key] = Gate(group.n_units, config, group.name, stream=group.id).to(device)
    gate_value: dict[int, fx.Node] = {}
    if plan.gate_keys:
        with gm.graph.inserting_after(last_input):
            bank = gm.graph.call_module(GATES)
        annotate(bank, gate=GateRole.BANK)
        insert_at = bank
        for i, gid in enumerate(plan.gate_keys):
            with gm.graph.inserting_after(insert_at):
                insert_at = gate_value[gid] = gm.graph.call_function(operator.getitem, (bank, i))
            annotate(insert_at, gate=GateRole.VALUE)

    consumers = [(c, g) for g in plan.groups if g.prunable for c in g.consumers]
    consumers.sort(key=lambda cg: position[nodes[cg[0].node]])
    gates_on: dict[tuple[str, str], list] = defaultdict(list)
    for consumer, group in consumers:
        gates_on[consumer.node, consumer.input].append((consumer, group))
    folded: set[tuple[str, str]] = set()
    current: dict[tuple[str, str], fx.Node] = {}  # what a consumer reads now in place of an input
    for consumer, group in consumers:
        if (consumer.node, consumer.input) in folded:
            continue
        node, inp = nodes[consumer.node], nodes[consumer.input]
        space = plan.spaces[consumer.space]
        on_input = gates_on[consumer.node, consumer.input]
        if all(foldable(gm, node, inp, plan.spaces[c.space].dim) for c, _ in on_input):
            # Two gates on one input (a head and its dims) fold as their product.
            with gm.graph.inserting_before(node):
                z = _folded_value(gm, plan, on_input, gate_value)
            for added in fold(gm, node, {"weight": (1, z)}):
                annotate(added, gate=GateRole.FOLD)
            folded.add((consumer.node, consumer.input))
            continue
        producer = nodes.get(consumer.folds_at)
        if len(on_input) == 1 and producer is not None and \
                folds_at_producer(gm, producer, [plan.spaces[k].param for k in consumer.fold]):
            with gm.graph.inserting_before(producer):
                scales = _producer_scales(gm, plan, consumer, group.id, gate_value[group.id])
            for added in fold(gm, producer, scales):
                annotate(added, gate=GateRole.FOLD)
            folded.add((consumer.node, consumer.input))
            continue
        now = current.get((node.name, inp.name), inp)
        # Two gates on one input (a head and its dims) multiply: gate what the first gated.
        key = (now.name, group.id)
        if key not in gated:
            with gm.graph.inserting_before(node):
                gated[key] = _gate_input(gm, plan, group.id, now, len(shape_of(inp)), gate_value[group.id], space)
        node.replace_input_with(now, gated[key])
        current[node.name, inp.name] = gated[key]


def _folded_value(gm, plan, on_input, gate_value: dict[int, fx.Node]) -> fx.Node:
    """The product of the gates on one input, each in the input's channel order."""
    z = None
    for consumer, group in on_input:
        units = _units(gm, plan, group.id, gate_value[group.id], plan.spaces[consumer.space])
        if z is None:
            z = units
        else:
            z = gm.graph.call_function(operator.mul, (z, units))
            annotate(z, gate=GateRole.FOLD)
    return z


def _producer_scales(gm, plan, consumer, gid: int, z: fx.Node) -> dict[str, tuple[int, fx.Node]]:
    """For :func:`~lumos_fx.gate_fold.fold` of the producer's weight and bias, the scale of
    each dim the consumer's gate folds into (one for the weight's rows and the bias when
    they cover the same indices)."""
    scales, rows = {}, {}
    for key in consumer.fold:
        space = plan.spaces[key]
        same = (tuple(space.units), None if space.covers is None else tuple(space.covers))
        if same not in rows:
            rows[same] = _rows(gm, plan, gid, z, space)
        scales[space.param.rsplit(".", 1)[1]] = (space.dim, rows[same])
    return scales


def _rows(gm, plan, gid, z: fx.Node, space) -> fx.Node:
    """The scale of every index of a parameter dim that a gate folds into: ``z[units]`` at the
    indices the space covers (a query's rows of a joint q/k/v projection), 1 elsewhere."""
    z = _units(gm, plan, gid, z, space)
    if space.covers is None:
        return z
    gate = gm.get_submodule(f"{GATES}.{plan.gate_keys[gid]}")
    where = np.full(plan.param_shapes[space.param][space.dim], len(space.covers))
    where[space.covers] = np.arange(len(space.covers))
    name = "rows_" + slug(space.key)
    gate.register_buffer(name, torch.as_tensor(where, dtype=torch.long, device=gate.log_alpha.device),
                         persistent=False)
    graph = gm.graph
    one = graph.call_method("new_ones", (z, 1))
    joined = graph.call_function(torch.cat, ([z, one],))
    index = graph.get_attr(f"{GATES}.{plan.gate_keys[gid]}.{name}")
    rows = graph.call_function(torch.index_select, (joined, 0, index))
    for n in (one, joined, index, rows):
        annotate(n, gate=GateRole.INDEX)
    return rows


def _units(gm, plan, gid, z: fx.Node, space) -> fx.Node:
    """``z[units]``: the gate value of each channel of the space, in its order."""
    gate = gm.get_submodule(f"{GATES}.{plan.gate_keys[gid]}")
    if np.array_equal(space.units, np.arange(gate.n)):
        return z
    name = "units_" + slug(space.key)
    gate.register_buffer(name, torch.as_tensor(space.units, dtype=torch.long, device=gate.log_alpha.device),
                         persistent=False)
    index = gm.graph.get_attr(f"{GATES}.{plan.gate_keys[gid]}.{name}")
    z = gm.graph.call_function(torch.index_select, (z, 0, index))
    annotate(index, gate=GateRole.INDEX)
    annotate(z, gate=GateRole.INDEX)
    return z


def _gate_input(gm, plan, gid, inp: fx.Node, ndim: int, z: fx.Node, space) -> fx.Node:
    """``inp * z[units]``, with ``z`` shaped to broadcast along the space's channel dim."""
    graph = gm.graph
    z = _units(gm, plan, gid, z, space)
    if space.dim != ndim - 1:
        z = graph.call_method("view", (z, -1, *([1] * (ndim - 1 - space.dim))))
        annotate(z, gate=GateRole.VIEW)
    out = graph.call_function(operator.mul, (inp, z))
    annotate(out, gate=GateRole.MUL)
    return out
