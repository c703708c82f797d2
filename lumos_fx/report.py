"""Stage 5 (report): what the cut removed, per group, in parameters, FLOPs and features."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx
from torch.utils.flop_counter import FlopCounterMode

from .budget import Snap
from .plan import GATES, plan_of
from .rounding import Rounded
from .verify import eval_mode


@dataclass
class GroupRow:
    name: str
    before: int
    after: int
    layers: list[str]


@dataclass
class Summary:
    """The result of :func:`summary`: print it for a table, or read its fields."""

    groups: list[GroupRow]
    kept_whole: dict[str, str]  # group name -> why it cannot be pruned
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    features: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # input -> (kept, removed)
    fixed_size: list[str] = field(default_factory=list)  # ops that became constants at the example's size
    budget: Snap | None = None  # with Config(target_params=...): the target and how the cut met it
    ungated: dict[str, str] = field(default_factory=dict)  # input -> why its features have no gate
    assumptions: list[str] = field(default_factory=list)  # what the pruned model's guards check on its inputs
    one_op: dict[str, str] = field(default_factory=dict)  # submodule fx could not trace into -> the error
    rounded: list[Rounded] = field(default_factory=list)  # widths Config(round_to=...) rounded up

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.groups] + [5])
        lines = [f"{'group':<{width}}  {'channels':>13}  layers"]
        for r in self.groups:
            lines.append(f"{r.name:<{width}}  {r.before:>6} -> {r.after:<4}  {', '.join(r.layers)}")
        lines.append("")
        lines.append(f"parameters  {self.params_before:>12,} -> {self.params_after:,} "
                     f"({_ratio(self.params_after, self.params_before)})")
        lines.append(f"FLOPs       {self.flops_before:>12,} -> {self.flops_after:,} "
                     f"({_ratio(self.flops_after, self.flops_before)}, forward on example_inputs)")
        if self.budget is not None:
            lines.append(str(self.budget))
        for multiple in sorted({r.multiple for r in self.rounded}):
            lines.append(f"widths rounded up to multiples of {multiple} channels: "
                         f"{', '.join(str(r) for r in self.rounded if r.multiple == multiple)}")
        for name, (kept, removed) in self.features.items():
            lines.append(f"input '{name}': kept {len(kept)} of {len(kept) + len(removed)} features: {', '.join(kept)}")
            if removed:
                lines.append(f"  removed: {', '.join(removed)}")
            if name in self.ungated:
                lines.append(f"  not gated: {self.ungated[name]}")
        if self.fixed_size:
            lines.append("valid at the example input's spatial size only: these ops became constants that vary "
                         "over space, computed at that size:")
            lines.extend(f"  {op}" for op in self.fixed_size)
        if self.assumptions:
            lines.append("assumptions, checked when the pruned model runs:")
            lines.extend(f"  {a}" for a in self.assumptions)
        if self.one_op:
            lines.append("called as one op, fx could not trace into them (their channels are kept, unless the call only scales whole samples):")
            lines.extend(f"  {name}: {why}" for name, why in self.one_op.items())
        if self.kept_whole:
            lines.append("kept whole:")
            lines.extend(f"  {name}: {why}" for name, why in self.kept_whole.items())
        return "\n".join(lines)

    __repr__ = __str__


def _ratio(after: int, before: int) -> str:
    return f"{after / before:.1%} kept" if before else "n/a"


def count_flops(model: torch.nn.Module, inputs: tuple) -> int:
    """Forward FLOPs of `model` on `inputs`, as torch.utils.flop_counter counts them."""
    with torch.no_grad(), eval_mode(model), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(GATES + "."))


def build_summary(wrapped: fx.GraphModule, pruned: fx.GraphModule, keep: dict[int, np.ndarray],
                  flops_after: int, fixed_size: list[str], budget: Snap | None = None,
                  assumptions: list[str] = (), rounded: list[Rounded] = ()) -> Summary:
    """The summary of a cut; `flops_after` is the pruned model's forward FLOPs on example_inputs."""
    plan = plan_of(wrapped)
    rows = []
    kept_whole = {}
    for group in plan.groups:
        spaces = [plan.spaces[k] for k in group.spaces]
        producers = [s.label for s in spaces if s.producer and s.param is None]
        if group.prunable:
            # A head-dims group's own space (no node) names the group, not a layer.
            layers = [s.label for s in spaces if s.producer and s.param is None and s.node is not None]
            layers = list(dict.fromkeys(layers + [_title(plan, c.node) for c in group.consumers]))
            rows.append(GroupRow(group.name, group.n_units, int(keep[group.id].sum()), layers))
        elif producers and group.blocked:
            kept_whole[group.name] = group.blocked[0]
    features, ungated = {}, {}
    for col in pruned.meta["lumos_columns"]:
        kept = set(col.kept)
        features[col.name] = (list(col.names), [n for i, n in enumerate(plan.feature_names[col.node]) if i not in kept])
        group = plan.group_of(plan.space_of(col.node))
        if not group.prunable:
            ungated[col.name] = group.blocked[0] if group.blocked else "no layer reads its features linearly"
    return Summary(
        rows, kept_whole,
        params_before=count_params(wrapped), params_after=count_params(pruned),
        flops_before=plan.example_flops,
        flops_after=flops_after,
        features=features,
        fixed_size=fixed_size,
        budget=budget,
        ungated=ungated,
        assumptions=list(assumptions),
        one_op=dict(plan.auto_leaves),
        rounded=list(rounded),
    )


def _title(plan, node_name: str) -> str:
    space = plan.space_of(node_name)
    return space.label if space is not None else node_name
