"""Stage 4: cut the closed channels out and check the cut model against the gated one.

The pass, on a deep copy of the instrumented model:

1. masks from the eval gates (``z > 0`` keeps a unit);
2. the gate nodes come out of the graph;
3. each group's eval gate values are folded into its consumers' weights (exact: the
   consumers are linear in the gated input);
4. every node gets a status: *empty* (all its channels closed: removed), *const* (its
   value no longer depends on the inputs: the branch becomes the constant it computes), or
   *live*; the node's rule rewrites it (literal sizes, split points, slice bounds) and
   constants that meet live data are folded into the op (``h + const``) or expanded to the
   live batch shape;
5. parameters are sliced to the kept channels and modules resized;
6. dead nodes and submodules are removed, the graph is linted and recompiled;
7. the result is compared with ``wrapped.eval()`` on the example inputs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict

import numpy as np
import torch
from torch import fx, nn
from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from .budget import Snap, budget_of, snap_to_budget
from .rounding import Rounded, round_widths
from .channels import HeadDimsKey, PartKey, Space
from .errors import GateError, NotInstrumentedError, PruneError
from .fxutil import copy_instrumented, describe, fetch_attr, free_attr_name, shape_of
from .gate_fold import unfold
from .guards import add_guards
from .latency_check import settle as settle_latency
from .input_columns import input_columns, kept_features, select, select_in_graph
from .node_info import GateRole, annotate, info
from .plan import GATES, Plan, gate_modules, instrumented, plan_of
from .report import Summary, build_summary
from .rules import REGISTRY
from .rules.api import LIVE, Outcome, Status, run_op
from .modes import where_paths_part
from .verify import on_device_of, output_error, run_in_train_mode, run_quietly, within_tolerance


class PruneContext:
    """The cut of one model: masks, node statuses, constants, and the graph edits a rule may
    make; the :class:`~lumos_fx.rules.api.Pruning` handle the rules receive."""

    def __init__(self, gm: fx.GraphModule, plan: Plan, keep: dict[int, np.ndarray], shrink_inputs: bool) -> None:
        self.gm = gm
        self.plan = plan
        self.keep = keep
        self.shrink_inputs = shrink_inputs
        self.original = set(gm.graph.nodes)
        # Values that vary with the inputs: only those carry the input's runtime sizes.
        self.from_inputs = {n for n in gm.graph.nodes if n.op == "placeholder"}
        for n in gm.graph.nodes:
            if any(a in self.from_inputs for a in n.all_input_nodes):
                self.from_inputs.add(n)
        self.status: dict[fx.Node, Status] = {}
        self.consts: dict[fx.Node, torch.Tensor] = {}
        self._const_attr: dict[fx.Node, str] = {}
        self._expanded: dict[tuple[fx.Node, bool], fx.Node] = {}
        self.fixed_size: list[str] = []  # ops whose constant holds at the example's size only
        # Live tensors added to carry a runtime size no kept node has (the number of graphs
        # after a pooling whose channels all closed), with their example sizes.
        self.witnesses: list[tuple[fx.Node, tuple[int, ...]]] = []

    # ---- masks ---------------------------------------------------------------------
    def space(self, node) -> Space | None:
        if not isinstance(node, fx.Node) or node not in self.original:
            return None
        return self.plan.space_of(node.name)

    def prunable(self, space: Space) -> bool:
        return self.plan.group_of(space).prunable

    def kept(self, space: Space) -> np.ndarray:
        """Original indices of the channels of `space` that stay, in order: those whose unit
        stays in this space's group and in the group of every space refining it."""
        mask = self.keep[space.group][space.units] if self.prunable(space) else np.ones(space.size, bool)
        for fine in self.plan.refinements(space.key):
            if self.prunable(fine):
                mask = mask.copy()
                mask[fine.covers] &= self.keep[fine.group][fine.units]
        return np.flatnonzero(mask)

    def n_kept(self, space: Space) -> int:
        return len(self.kept(space))

    def extra_spaces(self, node: fx.Node) -> list[Space]:
        return self.plan.extra_spaces(node.name)

    def part(self, node: fx.Node, index: int) -> Space | None:
        return self.plan.spaces.get(PartKey(node.name, index))

    # ---- statuses ------------------------------------------------------------------
    def is_empty(self, node) -> bool:
        return self.status.get(node) is Status.EMPTY

    def is_const(self, node) -> bool:
        return self.status.get(node) is Status.CONST

    def is_live(self, node) -> bool:
        return self.status.get(node, Status.LIVE) is Status.LIVE

    def const(self, node: fx.Node) -> torch.Tensor:
        return self.consts[node]

    def is_static(self, node) -> bool:
        """True for values that do not depend on the inputs: constants and attributes (but
        for the buffers forward updates)."""
        return self.is_const(node) or (isinstance(node, fx.Node) and node.op == "get_attr"
                                       and node.target not in self.plan.stateful)

    def value(self, node: fx.Node):
        """The value of a static node."""
        return self.consts[node] if self.is_const(node) else fetch_attr(self.gm, node.target)

    def module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def evaluate(self, node: fx.Node, value_of=None) -> torch.Tensor:
        """Run `node`'s op on the values of its inputs (all inputs must be static), each
        taken by `value_of` (default :meth:`value`). An op that writes an input in place
        runs on copies: a constant may be a parameter itself, or read by other nodes."""
        take, copies = value_of or self.value, bool(info(node).writes)

        def value(a: fx.Node):
            v = take(a)
            return v.clone() if copies and isinstance(v, torch.Tensor) else v

        with torch.no_grad():
            return run_op(node, value, self.module(node) if node.op == "call_module" else None)

    def broadcast_form(self, node: fx.Node, vector: torch.Tensor) -> torch.Tensor:
        """`vector` (one value per channel) shaped like `node`'s output with every other dim 1."""
        space = self.space(node)
        shape = [1] * len(shape_of(node))
        shape[space.dim] = -1
        return vector.reshape(shape)

    def is_uniform(self, node: fx.Node) -> bool:
        """True for a constant in broadcast form: one value per channel, size 1 elsewhere."""
        value, space = self.consts[node], self.space(node)
        return space is not None and all(s == 1 for d, s in enumerate(value.shape) if d != space.dim)

    def example_value(self, node):
        """A static value at `node`'s example shape on every dim but the first (the batch,
        which broadcasting restores)."""
        if not self.is_const(node):
            return self.value(node)
        value = self.consts[node]
        shape = list(shape_of(node) or value.shape)
        if len(shape) != value.dim():
            return value
        shape[0] = value.shape[0]
        return value.expand(shape)

    def evaluate_at_example(self, node: fx.Node):
        """`node`'s op on static inputs at their example shapes: exact at the example input's
        size (the op's result may vary over space, as a padded conv of a constant does)."""
        if any(self.is_const(a) and tuple(self.example_value(a).shape[1:]) != tuple(self.consts[a].shape[1:])
               for a in node.all_input_nodes):
            self.holds_at_example_size(node)
        return self.evaluate(node, self.example_value)

    def holds_at_example_size(self, node: fx.Node) -> None:
        self.fixed_size.append(describe(node, self.gm))

    # ---- graph edits ---------------------------------------------------------------
    def replace_input(self, node: fx.Node, old: fx.Node, new: fx.Node) -> None:
        node.replace_input_with(old, new)

    def insert(self, before: fx.Node, op: str, target, args: tuple, kwargs: dict | None = None) -> fx.Node:
        if op not in ("call_method", "call_function"):
            raise ValueError(f"a rule inserts call_method or call_function nodes, not {op}")
        with self.gm.graph.inserting_before(before):
            return self.gm.graph.create_node(op, target, args, kwargs or {})

    def erase(self, node: fx.Node) -> None:
        self.gm.graph.erase_node(node)

    def add_witness(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        self.witnesses.append((node, shape))

    def const_attr(self, node: fx.Node, user: fx.Node, value: torch.Tensor | None = None) -> fx.Node:
        """A buffer holding `node`'s constant (or `value`, a form of it), kept channels only,
        leading unit dims dropped (broadcasting restores them), read by a get_attr inserted
        before `user`."""
        value = self.consts[node] if value is None else value
        key = (node, tuple(value.shape))
        if key not in self._const_attr:
            space = self.space(node)
            for cut in [space] + self.plan.extra_spaces(node.name):
                if value.shape[cut.dim] == cut.size:  # not a broadcast dim
                    value = value.index_select(cut.dim, torch.as_tensor(self.kept(cut), device=value.device))
            lead = next((d for d in range(value.dim()) if value.shape[d] != 1), value.dim())
            value = value.reshape(value.shape[min(lead, space.dim):]).detach().clone()
            name = free_attr_name(self.gm, f"{node.name}_const")
            self.gm.register_buffer(name, value)
            self._const_attr[key] = name
        with self.gm.graph.inserting_before(user):
            return self.gm.graph.get_attr(self._const_attr[key])

    def materialize(self, node: fx.Node, user: fx.Node) -> fx.Node:
        """`node`'s constant expanded to its runtime shape, with the sizes it lacks (the
        batch, and dims where it has size 1) read from a live tensor. Where no live tensor
        has those sizes, the constant is taken at its example shape and only the batch is
        read (exact at the example input's spatial size)."""
        # A user that writes its input in place gets a copy, never the buffer itself.
        fresh = bool(info(user).writes)
        if (node, fresh) not in self._expanded:
            space, value, target = self.space(node), self.consts[node], shape_of(node)
            need = [d for d in range(len(target))
                    if d != space.dim and (value.shape[d] != target[d] or (d == 0 and value.shape[0] == 1))]
            try:
                ref = self.reference(node, need, user)
            except PruneError:
                if need == [0] or 0 not in need:
                    raise
                value, need = self.example_value(node), [0]
                ref = self.reference(node, need, user)
                self.fixed_size.append(describe(node, self.gm))
            graph = self.gm.graph
            attr = self.const_attr(node, user, value)
            dropped = len(target) - fetch_attr(self.gm, attr.target).dim()
            with graph.inserting_before(user):
                # expand() takes explicit sizes for the leading unit dims const_attr dropped.
                sizes = [graph.call_method("size", (ref, d)) if d in need else (1 if d < dropped else -1)
                         for d in range(len(target))]
                expanded = graph.call_method("expand", (attr, *sizes))
                self._expanded[node, fresh] = graph.call_method("clone" if fresh else "contiguous", (expanded,))
        return self._expanded[node, fresh]

    def fresh_copy(self, node: fx.Node, value: torch.Tensor) -> None:
        """Make `node`, whose value is the constant `value` but which an in-place op writes
        later, compute a fresh copy of it on every call: the write must not change the
        constant, and the node's later readers must see the write."""
        self.status[node], self.consts[node] = Status.CONST, value
        expanded = self.materialize(node, node)
        del self.status[node], self.consts[node]
        self._expanded = {k: v for k, v in self._expanded.items() if k[0] is not node}
        node.op, node.target, node.args, node.kwargs = "call_method", "clone", (expanded,), {}
        annotate(node, writes=())  # it no longer writes what it read

    def materialize_dead_inputs(self, node: fx.Node) -> Outcome:
        """Feed `node` its constant inputs at their runtime shapes."""
        for arg in list(node.all_input_nodes):
            if self.is_const(arg):
                self.replace_input(node, arg, self.materialize(arg, node))
            elif self.is_empty(arg) and arg.op != "placeholder":
                raise PruneError(f"internal: {describe(node, self.gm)} reads {arg.name}, whose channels are all "
                                 "closed, and has no rule for that; please report this model")
        return LIVE

    def runtime_shape(self, node: fx.Node) -> tuple[int, ...] | None:
        shape = shape_of(node)
        space = self.space(node)
        if shape is None or space is None or (node.op == "placeholder" and not self.shrink_inputs):
            return shape
        shape = list(shape)
        shape[space.dim] = self.n_kept(space)
        return tuple(shape)

    def reference(self, node: fx.Node, dims: list[int], user: fx.Node | None = None) -> fx.Node:
        """A live tensor whose runtime size equals `node`'s on `dims`: an input of `user`,
        a witness, a model input, else the nearest such ancestor. Only the batch needed, any model
        input with that batch size serves (dim 0 is the batch)."""
        target = list(shape_of(node))

        def fits(cand: fx.Node) -> bool:
            shape = self.runtime_shape(cand)
            if shape is None or cand not in self.from_inputs or not (self.is_live(cand) or cand.op == "placeholder"):
                return False
            if dims != [0] and len(shape) != len(target):
                return False
            return all(d < len(shape) and shape[d] == target[d] for d in dims)

        first = [a for a in (user.all_input_nodes if user is not None else ()) if a is not node]
        for cand in first:
            if fits(cand):
                return cand
        for witness, shape in self.witnesses:
            if dims == [0] and shape[0] == target[0]:
                return witness
        for cand in self.gm.graph.nodes:
            if cand.op == "placeholder" and fits(cand):
                return cand
        seen, queue = {node}, deque(node.all_input_nodes)
        while queue:
            cand = queue.popleft()
            if cand in seen:
                continue
            seen.add(cand)
            if fits(cand):
                return cand
            queue.extend(cand.all_input_nodes)
        raise PruneError(f"{describe(node, self.gm)} became a constant, and no live tensor has its batch "
                         "shape to expand it to; please report this model")


def eval_gate_values(wrapped: fx.GraphModule) -> dict[int, torch.Tensor]:
    values = {}
    for gid, gate in gate_modules(wrapped).items():
        la = gate.log_alpha.detach()
        bad = ~torch.isfinite(la)
        if bad.any():
            raise GateError(
                f"gate of group '{gate.group}' has {int(bad.sum())} non-finite log_alpha values "
                f"(of {la.numel()}): training diverged. Lower the gate learning rate "
                "(lumos_fx.param_groups(wrapped, lr, gate_lr=...)) or check the loss for NaN."
            )
        values[gid] = gate.eval_value().detach().cpu()
    return values


def _masks(plan: Plan, z: dict[int, torch.Tensor]) -> dict[int, np.ndarray]:
    """``z > 0`` keeps a unit. A head-dims group keeps one dim when all close: a head of
    width 0 has no attention, and that dim's gate, 0, is folded into its weights."""
    keep = {gid: (values > 0).numpy() for gid, values in z.items()}
    for gid, mask in keep.items():
        if not mask.any() and any(isinstance(k, HeadDimsKey) for k in plan.groups[gid].spaces):
            mask[0] = True
    return keep


def _strip_gates(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if info(node).folded is not None:
            unfold(node)
    nodes = [n for n in gm.graph.nodes if info(n).gate is not None]
    for node in nodes:
        if info(node).gate is GateRole.MUL:
            node.replace_all_uses_with(node.args[0])
    for node in reversed(nodes):
        gm.graph.erase_node(node)
    gm.delete_submodule(GATES)


def _fold_gates(gm: fx.GraphModule, plan: Plan, z: dict[int, torch.Tensor]) -> None:
    done = set()
    with torch.no_grad():
        for gid in z:
            for consumer in plan.groups[gid].consumers:
                for key in consumer.fold:
                    if key in done:
                        continue
                    done.add(key)
                    space = plan.spaces[key]
                    tensor = fetch_attr(gm, space.param)
                    shape = [1] * tensor.dim()
                    shape[space.dim] = -1
                    scale = z[gid][torch.as_tensor(space.units)]
                    if space.covers is not None:
                        scale = torch.ones(tensor.shape[space.dim]).index_put((torch.as_tensor(space.covers),), scale)
                    tensor.mul_(scale.reshape(shape).to(tensor.device, tensor.dtype))


def _slice_parameters(gm: fx.GraphModule, plan: Plan, pc: PruneContext) -> None:
    for name, spaces in plan.param_spaces().items():
        cuts = [(s.dim, pc.kept(s)) for s in spaces if pc.n_kept(s) < s.size]
        if not cuts:
            continue
        old = fetch_attr(gm, name)
        new = old.detach()
        for dim, idx in cuts:
            new = new.index_select(dim, torch.as_tensor(idx, device=new.device))
        new = nn.Parameter(new.clone(), requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new.clone()
        for alias in plan.param_names[name]:
            owner, _, attr = alias.rpartition(".")
            module = gm.get_submodule(owner)
            (module._parameters if attr in module._parameters else module._buffers)[attr] = new
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            rule = REGISTRY.module_rule(module)
            if rule is not None:
                rule.resize(module)


class _Writes:
    """The in-place writes of a graph as the example run saw them (the record's ``writes``:
    the values whose storage a node wrote, as ``torch.relu_(h)``, ``nn.ReLU(inplace=True)``
    or ``x[i] = v`` do), and which of them a later op reads through another node than the
    write's result (``h`` itself, or a view of it)."""

    def __init__(self, graph: fx.Graph) -> None:
        self.order = {n: i for i, n in enumerate(graph.nodes)}
        self.by_name = {n.name: n for n in graph.nodes}

    def written_by(self, writer: fx.Node) -> list[fx.Node]:
        return [self.by_name[name] for name in info(writer).writes if name in self.by_name]

    def read_later(self, writer: fx.Node, value: fx.Node) -> bool:
        return any(self.order[u] > self.order[writer] for u in value.users if u is not writer)

    def read_after_write(self) -> set[fx.Node]:
        """Values a later op reads after a write: folded into a constant, that read would miss it."""
        out = set()
        for writer in self.order:
            values = self.written_by(writer)
            if any(self.read_later(writer, v) for v in values):
                out.update(values)
        return out

    def kept(self, node: fx.Node) -> bool:
        """Dead-code elimination's test: impure, or a write of a model input, an attribute, or
        a value some op still reads after it (the graph as it is now: users already removed
        no longer count)."""
        return node.is_impure() or any(v.op in ("placeholder", "get_attr") or self.read_later(node, v)
                                       for v in self.written_by(node))


def _delete_unused_attributes(gm: fx.GraphModule) -> None:
    """Parameters and buffers neither read by get_attr nor owned by a called module (those
    folded into constants) leave the model."""
    used_modules = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        owner, _, attr = name.rpartition(".")
        if name in read or any(owner == m or owner.startswith(m + ".") for m in used_modules):
            continue
        module = gm.get_submodule(owner)
        module._parameters.pop(attr, None)
        module._buffers.pop(attr, None)


def cut(wrapped: fx.GraphModule, keep: dict[int, np.ndarray], z: dict[int, torch.Tensor],
        shrink_inputs: bool) -> fx.GraphModule:
    """The pruned GraphModule for masks `keep` and folded gate values `z` (no verification)."""
    plan = plan_of(wrapped)
    gm = copy_instrumented(wrapped)
    gm.eval()
    _strip_gates(gm)
    _fold_gates(gm, plan, z)
    pc = PruneContext(gm, plan, keep, shrink_inputs)
    read_after_write = _Writes(gm.graph).read_after_write()
    for node in list(gm.graph.nodes):
        if node._erased:  # a shape read an earlier rule turned into a literal
            continue
        space = pc.space(node)
        rule = REGISTRY.lookup(node, gm) if node.name not in plan.unruled else None
        if space is not None and pc.n_kept(space) == 0 < space.size:
            pc.status[node] = Status.EMPTY
            if rule is not None:
                rule.emptied(node, pc)
            continue
        outcome = rule.prune(node, pc) if rule is not None else pc.materialize_dead_inputs(node)
        if outcome.status is Status.CONST and node in read_after_write and space is not None:
            pc.fresh_copy(node, outcome.value)
        elif outcome.status is Status.CONST:
            pc.status[node], pc.consts[node] = Status.CONST, outcome.value
        elif outcome.status is Status.EMPTY:
            pc.status[node] = Status.EMPTY
    _slice_parameters(gm, plan, pc)
    columns = input_columns(gm, plan, pc.kept)
    if not shrink_inputs:
        select_in_graph(gm, columns)
    for node in reversed(list(gm.graph.nodes)):
        if not pc.is_live(node) and node.op != "placeholder":
            if node.users:
                raise PruneError(f"internal: removed node {node.name} is still read by {list(node.users)}")
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code(is_impure_node=_Writes(gm.graph).kept)
    gm.delete_all_unused_submodules()
    _delete_unused_attributes(gm)
    gm.graph.lint()
    gm.recompile()
    gm.meta.pop("lumos", None)
    gm.meta["lumos_fixed_size"] = pc.fixed_size
    gm.meta["lumos_columns"] = columns
    names, indices = kept_features(columns)
    # What the pruned model takes, by name: a model pruned again keeps naming its features.
    takes = {c.name: list(c.names) if shrink_inputs else plan.feature_names[c.node] for c in columns}
    preserved = {"kept_features": names, "kept_feature_indices": indices, "input_features": takes}
    gm.meta[_USER_PRESERVED_ATTRIBUTES_KEY] = preserved
    for key, value in preserved.items():
        setattr(gm, key, value)
    return gm


def _verify_inputs(plan: Plan, pruned: fx.GraphModule, shrink_inputs: bool) -> tuple:
    inputs = on_device_of(pruned, plan.example_inputs)
    return select(inputs, pruned.meta["lumos_columns"]) if shrink_inputs else inputs


def _error(wrapped: fx.GraphModule, pruned: fx.GraphModule, pruned_inputs: tuple) -> tuple[float, float, int]:
    """Largest output difference, output scale, and the pruned model's FLOPs on example_inputs."""
    plan = plan_of(wrapped)
    reference = run_quietly(wrapped, on_device_of(wrapped, plan.example_inputs), plan.stateful)
    try:
        with FlopCounterMode(display=False) as flops:
            candidate = run_quietly(pruned, pruned_inputs, plan.stateful)
    except Exception as e:
        raise PruneError(f"the pruned model fails on example_inputs: {type(e).__name__}: {e}") from e
    return *output_error(reference, candidate), int(flops.get_total_flops())


def _train_mode_error(wrapped: fx.GraphModule, pruned: fx.GraphModule,
                      pruned_inputs: tuple) -> tuple[float, float] | None:
    """For a model whose train mode takes its own path (:mod:`lumos_fx.modes`): the largest
    train-mode output difference and scale, the gates held at their eval values and both
    runs under one seed. None where the gated model's train mode draws random numbers (two
    seeds give two outputs), which no seed makes programs of other widths draw alike: then
    only the output's structure and shapes are compared."""
    plan = plan_of(wrapped)
    inputs = on_device_of(wrapped, plan.example_inputs)
    still = [wrapped.get_submodule(GATES)]  # the gates at their eval values
    reference = run_in_train_mode(wrapped, inputs, 0, plan.stateful, still)
    try:
        candidate = run_in_train_mode(pruned, pruned_inputs, 0, plan.stateful)
    except Exception as e:
        raise PruneError(f"the pruned model fails on example_inputs in train mode: {type(e).__name__}: {e}") from e
    if within_tolerance(*output_error(reference, run_in_train_mode(wrapped, inputs, 1, plan.stateful, still))):
        return output_error(reference, candidate)
    if output_error(*(tree_map(lambda t: torch.zeros_like(t) if isinstance(t, torch.Tensor) else t, out)
                      for out in (reference, candidate)))[0] != 0:
        return float("inf"), 0.0
    return None


def settled_record(settled: tuple[Snap | None, list[Rounded]]) -> dict:
    """What :func:`settle` returned as plain data, for the state dict of frozen gates."""
    snap, rounded = settled
    return {"snap": None if snap is None else asdict(snap), "rounded": [asdict(r) for r in rounded]}


def _from_record(record: dict | None) -> tuple[Snap | None, list[Rounded]]:
    if record is None:  # frozen in a state dict of before the record was kept: no snap to report
        return None, []
    snap = record["snap"]
    return (None if snap is None else Snap(**snap)), [Rounded(**r) for r in record["rounded"]]


def settle(wrapped: fx.GraphModule) -> tuple[Snap | None, list[Rounded]]:
    """Move the gates of `wrapped`, in place, to what prune() cuts: snapped to the budget
    (a latency budget's snap timed and settled, see :mod:`lumos_fx.latency_check`), then
    widths rounded (:mod:`lumos_fx.rounding`). Gates that :func:`lumos_fx.freeze_gates`
    froze were settled then and do not move again: the weights trained since are the cut
    model's. Returns the snap (None without a budget) and the rounded groups.

    Raises:
        GateError: a gate holds NaN or inf (before the snap reads it).
    """
    plan = plan_of(wrapped)
    eval_gate_values(wrapped)  # non-finite gates are an error before the snap reads them
    if getattr(wrapped, GATES).frozen:
        return _from_record(getattr(wrapped, GATES).settled)
    trained = ({gid: g.log_alpha.detach().clone() for gid, g in gate_modules(wrapped).items()}  # re-snaps start here
               if plan.config.target_latency is not None else None)
    snap = snap_to_budget(wrapped)
    if snap is not None and snap.kind == "latency":
        def build():
            now = eval_gate_values(wrapped)
            masks = _masks(plan, now)
            return (cut(wrapped, masks, now, False),
                    cut(wrapped, {gid: np.ones_like(k) for gid, k in masks.items()}, now, False))
        snap = settle_latency(wrapped, snap, trained, build)
    return snap, round_widths(wrapped)


def prune(wrapped: fx.GraphModule, *, shrink_inputs: bool = False) -> fx.GraphModule:
    """The compact model: every closed channel physically removed, verified on example_inputs.

    With a budget (``Config(target_params=...)``), the gates of `wrapped` are first snapped
    to it (:func:`lumos_fx.budget.snap_to_budget`), in place, so the invariant below holds.

    Args:
        wrapped: a model returned by :func:`lumos_fx.instrument` (trained or not).
        shrink_inputs: by default the pruned model still takes every input feature and
            selects the kept ones itself (a drop-in replacement). With ``True`` it takes only
            the kept features; ``pruned.kept_features`` / ``pruned.kept_feature_indices`` say
            which, per input.

    Returns:
        a ``torch.fx.GraphModule`` in eval mode with ``prune(w)(*x) == w.eval()(*x)``; its
        ``.code`` is the compact model as Python; ``lumos_fx.summary(pruned)`` reports the cut.

    Raises:
        NotInstrumentedError: `wrapped` did not come from instrument().
        GateError: a gate holds NaN or inf.
        PruneError: the cut model does not reproduce the gated model (names the groups).
    """
    wrapped = instrumented(wrapped)
    plan = plan_of(wrapped)
    snap, rounded = settle(wrapped)
    z = eval_gate_values(wrapped)
    keep = _masks(plan, z)
    pruned = cut(wrapped, keep, z, shrink_inputs)
    fixed_size = pruned.meta.pop("lumos_fixed_size")
    decisions = [str(info(n).decision) for n in pruned.graph.nodes if info(n).decision is not None]
    assumptions = decisions + add_guards(wrapped, pruned, plan.example_inputs, shrink_inputs, bool(fixed_size),
                                         plan.stateful)
    inputs = _verify_inputs(plan, pruned, shrink_inputs)
    err, scale, flops = _error(wrapped, pruned, inputs)
    parts = where_paths_part(pruned)
    if parts is not None:
        train = _train_mode_error(wrapped, pruned, inputs)
        checked = ("checked with the gates at their eval values" if train is not None else
                   "its outputs' shapes checked (it draws random numbers)")
        assumptions.append(f"train mode takes its own path (the code parts at {parts}): both paths are kept and cut "
                           f"alike; train mode {checked}")
        train_err, train_scale = train or (0.0, 0.0)
        if not within_tolerance(train_err, train_scale):
            raise PruneError(
                f"the pruned model differs from the gated model in train mode by {train_err:.3g} (output scale "
                f"{train_scale:.3g}), the gates at their eval values. This is a bug in lumos_fx; please report it "
                "with the model.")
    if not within_tolerance(err, scale):
        offenders = []
        for gid in keep:
            alone = {g: (k if g == gid else np.ones_like(k)) for g, k in keep.items()}
            single = cut(wrapped, alone, z, shrink_inputs)
            if not within_tolerance(*_error(wrapped, single, _verify_inputs(plan, single, shrink_inputs))[:2]):
                offenders.append(plan.groups[gid].name)
        raise PruneError(
            f"the pruned model differs from the gated model by {err:.3g} (output scale {scale:.3g}); "
            f"groups whose cut alone breaks it: {offenders or 'none alone (an interaction)'}. "
            "This is a bug in a lumos_fx rule; please report it with the model."
        )
    pruned.meta["lumos_example_inputs"] = inputs  # export traces what it writes out on them
    pruned.meta["lumos_summary"] = build_summary(wrapped, pruned, keep, flops, fixed_size, snap, assumptions, rounded)
    return pruned


def summary(module) -> Summary:
    """Per group channels before -> after, parameters and FLOPs before -> after, and the
    kept input features by name, for an instrumented model (as prune() would cut it now)
    or a pruned one."""
    module = instrumented(module)
    if isinstance(module, fx.GraphModule) and "lumos_summary" in module.meta:
        return module.meta["lumos_summary"]
    if isinstance(module, fx.GraphModule) and "lumos" in module.meta:
        if budget_of(module) is not None:
            # A copy: prune() snaps a budget's gates in place, and a report must not change the model.
            module = copy_instrumented(module)
        return prune(module).meta["lumos_summary"]
    raise NotInstrumentedError(
        f"summary() takes a model from lumos_fx.instrument() or lumos_fx.prune(), got {type(module).__name__}"
    )
