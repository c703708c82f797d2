"""What a pruned model holds only for some input shapes, checked when it runs.

prune() verifies the cut on the example inputs. Two things can tie a cut to their shapes:

- **rank**: rules cut along dims counted at the example's rank (a slice ``x[:, a:b]``, a
  ``cat`` on dim 1). For each feature input, the cut is also run at one dim more (the
  example stacked with a reordered copy) and one dim less (its first sample) wherever the
  instrumented model runs there; ranks it is not verified at get a guard;
- **size**: a branch that became a constant varying over space was computed at the
  example's spatial size (``Summary.fixed_size``); every input of 3 or more dims then gets a
  guard on the sizes of its dims other than the batch and the features.

A guard is a ``torch._assert`` at the top of ``forward``: the pruned model (and its export)
refuses such an input with a message that says why, instead of failing somewhere inside or
computing something else.
"""

from __future__ import annotations

import contextlib
import io
import operator

import torch
from torch import fx
from torch.utils import _pytree as pytree

from .input_columns import InputColumns, select
from .verify import on_device_of, output_error, run_quietly, within_tolerance


def _replace(inputs: tuple, path: tuple, value) -> tuple:
    paths, spec = pytree.tree_flatten_with_path(tuple(inputs))
    return pytree.tree_unflatten([value if tuple(p) == path else v for p, v in paths], spec)


def _leaf(inputs: tuple, path: tuple):
    return next(v for p, v in pytree.tree_flatten_with_path(tuple(inputs))[0] if tuple(p) == path)


def _verified(wrapped, pruned, inputs: tuple, columns, shrink: bool, stateful) -> bool | None:
    """True if the pruned model matches the instrumented one on `inputs`, False if not,
    None if the instrumented model does not take them."""
    # A GraphModule prints the generated line of a failure to stderr: a failed probe is no news.
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            reference = run_quietly(wrapped, on_device_of(wrapped, inputs), stateful)
        except Exception:
            return None
        pruned_inputs = on_device_of(pruned, select(inputs, columns) if shrink else inputs)
        try:
            return within_tolerance(*output_error(reference, run_quietly(pruned, pruned_inputs, stateful)))
        except Exception:
            return False


def _ranks(wrapped, pruned, example: tuple, col: InputColumns, columns, shrink: bool, stateful) -> tuple[bool, bool]:
    """Whether the cut is verified at one dim more and at one dim less than the example's.
    A rank the instrumented model refuses too is guarded all the same: the guard's message
    says more than a failure inside the model."""
    x = _leaf(example, col.path)
    more = _verified(wrapped, pruned, _replace(example, col.path, torch.stack([x, x.flip(0)])), columns, shrink,
                     stateful) is True
    less = x.dim() >= 2 and _verified(wrapped, pruned, _replace(example, col.path, x[0]), columns, shrink,
                                      stateful) is True
    return more, less


def _assert(graph: fx.Graph, cond: fx.Node, message: str) -> None:
    graph.call_function(torch._assert, (cond, message))


def _rank_guard(graph: fx.Graph, node: fx.Node, col: InputColumns, rank: int, more: bool, less: bool) -> str:
    """``torch._assert`` on the input's rank: equal to the example's, or at least / at most it."""
    op, relation = ((operator.ge, " or more") if more else (operator.le, " or fewer") if less
                    else (operator.eq, ""))
    _assert(graph, graph.call_function(op, (graph.call_method("dim", (node,)), rank)),
            f"lumos_fx: input '{col.name}' of this pruned model must have {rank} dims{relation}: the cut was "
            "verified on inputs of that rank only")
    return f"input '{col.name}' has {rank} dims{relation} (the cut was not verified at other ranks)"


def _size_guard(graph: fx.Graph, node: fx.Node, col: InputColumns, shape: torch.Size) -> str:
    """``torch._assert`` on every size of the input but its batch and its features."""
    rank = len(shape)
    for d in range(1, rank):
        if d - rank != col.dim:
            _assert(graph, graph.call_function(operator.eq, (graph.call_method("size", (node, d - rank)), shape[d])),
                    f"lumos_fx: dim {d - rank} of input '{col.name}' of this pruned model must be {shape[d]}: it "
                    "holds constants computed at the example input's size")
    return (f"input '{col.name}' has the example's size {tuple(shape[1:])} on every dim but the batch and the "
            "features (constants were computed at that size)")


def add_guards(wrapped: fx.GraphModule, pruned: fx.GraphModule, example: tuple, shrink: bool,
               fixed_size: bool, stateful=()) -> list[str]:
    """Insert the guards `pruned` needs at the top of its forward; returns what each assumes."""
    columns: list[InputColumns] = pruned.meta["lumos_columns"]
    placeholders = {n.name: n for n in pruned.graph.nodes if n.op == "placeholder"}
    first = next(n for n in pruned.graph.nodes if n.op != "placeholder")
    assumptions = []
    with pruned.graph.inserting_before(first):
        for col in columns:
            if col.path is None:
                continue
            x, node = _leaf(example, col.path), placeholders[col.node]
            more, less = _ranks(wrapped, pruned, example, col, columns, shrink, stateful)
            if not (more and less):
                assumptions.append(_rank_guard(pruned.graph, node, col, x.dim(), more, less))
            if fixed_size and x.dim() >= 3:
                assumptions.append(_size_guard(pruned.graph, node, col, x.shape))
    pruned.graph.lint()
    pruned.recompile()
    return assumptions
