"""What lumos_fx records on the fx nodes it traces and edits.

One typed, immutable record per node under ``node.meta["lumos"]`` (as ShapeProp keeps a
:class:`~torch.fx.passes.shape_prop.TensorMetadata` under ``"tensor_meta"``). Immutable,
because fx copies a graph's ``meta`` dicts shallowly: the instrumented model and the copy
prune() cuts hold the same records, and an edit of the copy must not reach the original.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from torch import fx

KEY = "lumos"


class GateRole(enum.Enum):
    """The nodes instrument() inserts, which prune() takes out again."""

    BANK = "bank"  # the call of the gate bank: one sample per gate per forward
    VALUE = "value"  # one gate's values, read off the bank's output
    INDEX = "index"  # a gate's values in a space's channel order
    VIEW = "view"  # a gate's values shaped to broadcast along the channel dim
    MUL = "mul"  # input * z in front of a consumer
    FOLD = "fold"  # the scaled weight of a layer the gate folds into


@dataclass(frozen=True)
class Decision:
    """A value the trace took from the example inputs (the ``torch._assert`` after it checks it)."""

    where: str  # the source line that asked
    value: object

    def __str__(self) -> str:
        return f"{self.where} (decided with {self.value!r}, as for the example inputs)"


@dataclass(frozen=True)
class NodeInfo:
    """lumos_fx's record of one node."""

    input: str | None = None  # placeholder: the model argument it stands for (``x``, ``batch['pos']``)
    flops: int = 0  # forward FLOPs of the node on the example inputs
    writes: tuple[str, ...] = ()  # nodes whose storage the node wrote in place on the example run
    assignment: Any = None  # a buffer assignment written as copy_: (side_effects.Change, source line)
    gate: GateRole | None = None  # a node instrument() inserted
    folded: str | None = None  # the module a gate-folded functional call stands for
    decision: Decision | None = None  # a guard: the decision on the example inputs it checks


_BLANK = NodeInfo()


def info(node: fx.Node) -> NodeInfo:
    """`node`'s record (a blank one when lumos_fx recorded nothing)."""
    return node.meta.get(KEY, _BLANK)


def annotate(node: fx.Node, **changes) -> None:
    """Replace fields of `node`'s record."""
    node.meta[KEY] = replace(info(node), **changes)
