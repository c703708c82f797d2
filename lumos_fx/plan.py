"""What instrument() learned about a model, and how the other stages find it again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import fx, nn
from torch._dynamo.eval_frame import OptimizedModule

from .channels import Group, NodeKey, Space, SpaceKey
from .config import Config
from .errors import NotInstrumentedError
from .gate import Gate

GATES = "lumos_gates"  # the instrumented model's submodule holding the gate bank


class Cost(Protocol):
    """An expected cost of the kept channels (:class:`lumos_fx.costs.CostModel`)."""

    total: float

    def expected(self, probs: dict[int, torch.Tensor]) -> torch.Tensor: ...

    def joined(self, p: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Plan:
    """What instrument() learned about a model, kept in ``wrapped.meta["lumos"]``: the channel
    analysis (:func:`lumos_fx.analyze.analyze`) with what instrument() adds to it, built once."""

    spaces: dict[SpaceKey, Space]
    groups: list[Group]
    param_names: dict[str, list[str]]  # canonical parameter name -> every name it is reachable by
    param_shapes: dict[str, tuple[int, ...]]
    gate_keys: dict[int, str] = field(default_factory=dict)  # group id -> key in wrapped.lumos_gates
    feature_names: dict[str, list[str]] = field(default_factory=dict)  # input name -> column names
    example_inputs: tuple = ()
    config: Config | None = None
    cost: Cost | None = None  # of the prunable parameters
    flop_cost: Cost | None = None  # of the gated layers' FLOPs
    latency_cost: Cost | None = None  # of the model's latency, with Config(target_latency=...)
    unruled: set[str] = field(default_factory=set)  # nodes with no rule, or whose rule refused them
    example_flops: int = 0  # forward FLOPs of the model on example_inputs
    refined: dict[SpaceKey, list[Space]] = field(default_factory=dict)  # space key -> spaces refining it
    extras: dict[str, list[Space]] = field(default_factory=dict)  # node name -> its spaces off the channel dim
    essential: set[int] = field(default_factory=set)  # groups every input-to-output path runs through
    stateful: frozenset[str] = frozenset()  # buffers and parameters forward updates on every call
    auto_leaves: dict[str, str] = field(default_factory=dict)  # submodules fx could not trace into -> why

    def space_of(self, node_name: str) -> Space | None:
        return self.spaces.get(NodeKey(node_name))

    def refinements(self, key: SpaceKey) -> list[Space]:
        """The spaces that gate channels of space `key` a second time (see :mod:`head_dims`)."""
        return self.refined.get(key, [])

    def extra_spaces(self, node_name: str) -> list[Space]:
        """Spaces of `node_name`'s output on dims other than its channel dim (a head dim)."""
        return self.extras.get(node_name, [])

    def group_of(self, space: Space) -> Group:
        return self.groups[space.group]

    def canonical_names(self) -> dict[str, str]:
        """Every name a parameter is reachable by -> its canonical name."""
        return {alias: name for name, aliases in self.param_names.items() for alias in aliases}

    def segments(self, gids) -> torch.Tensor:
        """For the gates' values joined in the bank's order: each unit's index in `gids` (the
        group it belongs to among them), or ``len(gids)`` for a unit of any other group."""
        index = {gid: i for i, gid in enumerate(gids)}
        return torch.tensor([index.get(gid, len(index)) for gid in self.gate_keys
                             for _ in range(self.groups[gid].n_units)], dtype=torch.long)

    def param_spaces(self) -> dict[str, list[Space]]:
        """Canonical parameter name -> its spaces (one per tied dim; refinements apart)."""
        out: dict[str, list[Space]] = {}
        for space in self.spaces.values():
            if space.param is not None and space.refines is None:
                out.setdefault(space.param, []).append(space)
        return out

    def input_groups(self) -> dict[str, Group]:
        """Model input name -> its prunable feature group."""
        out = {}
        for name in self.feature_names:
            group = self.group_of(self.spaces[NodeKey(name)])
            if group.prunable:
                out[name] = group
        return out


def instrumented(module: nn.Module) -> nn.Module:
    """The model inside `module` where it wraps one for training: under ``torch.compile``
    (``_orig_mod``) or ``DistributedDataParallel`` / ``DataParallel`` (``module``), which
    share its parameters and buffers; else `module` itself."""
    while True:
        if isinstance(module, OptimizedModule):
            module = module._orig_mod
        elif isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        else:
            return module


def plan_of(module) -> Plan:
    """The plan of an instrumented module; a clear error for anything else."""
    plan = getattr(module, "meta", {}).get("lumos") if isinstance(module, fx.GraphModule) else None
    if plan is None:
        raise NotInstrumentedError(
            f"expected a model returned by lumos_fx.instrument(), got {type(module).__name__}. "
            "Call wrapped = lumos_fx.instrument(model, example_inputs=(x,)) first, train wrapped, "
            "then pass wrapped here."
        )
    return plan


def gates(wrapped: fx.GraphModule) -> dict[str, Gate]:
    """Every gate of an instrumented model, by the name of the group it controls."""
    wrapped = instrumented(wrapped)
    plan = plan_of(wrapped)
    return {plan.groups[gid].name: gate for gid, gate in gate_modules(wrapped).items()}


def gate_modules(wrapped: fx.GraphModule) -> dict[int, Gate]:
    """Every gate of an instrumented model, by group id."""
    plan = plan_of(wrapped)
    modules = wrapped.get_submodule(GATES)
    return {gid: modules[key] for gid, key in plan.gate_keys.items()}
