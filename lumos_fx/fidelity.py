"""Check that a traced graph computes what the model's forward computes.

fx records the tensor operations of one run of forward and takes every Python decision
(an ``isinstance`` test, a Python attribute read) as it went in that run. Those decisions are
checked here, before any gate is inserted:

- each ``isinstance`` answer given to a traced value against the value's type when the
  graph runs on the example inputs;
- each buffer assignment the graph writes as ``copy_`` against the buffer's shape and dtype;
- the graph's output and the state it leaves (buffers, parameters) against one call of the
  model in eval mode, and in train mode where the model is deterministic there.

A failed check is a :class:`~lumos_fx.TraceError` that names the source lines of the
decisions the trace took, and the fix.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .errors import TraceError
from .fxutil import tensor_meta
from .inputs import fresh
from .node_info import info
from .side_effects import Change, Observation, buffer_values, changed, fingerprint, preserved, rng_devices, tensor_at
from .tracer import IsinstanceQuery, is_subclass
from .verify import in_mode, output_error, within_tolerance

_FIX = ("fix: write the forward so that the same tensor operations run whatever the inputs' values "
        "(test `x is None` rather than the type of a tensor), or move the code into a submodule that fx "
        "calls as one op: lumos_fx.Config(leaf_modules=[...]).")


def check_isinstance(gm: fx.GraphModule, queries: list[IsinstanceQuery]) -> None:
    """Every isinstance answer the tracer gave matches the type the value has at run time."""
    for q in queries:
        kind = q.node.meta.get("type")
        if q.node.graph is not gm.graph or kind is None:
            continue  # the value is not in the graph that runs (the eval-mode trace's twin)
        if is_subclass(kind, q.cls) != q.answer:
            raise TraceError(
                f"an isinstance() test on a traced value took the wrong branch, at {q.where}\n"
                f"  lumos_fx took the value for a {q.taken_for.__name__} while tracing and answered {q.answer}, "
                f"but it is a {kind.__name__} when the model runs.\n" + _FIX
            )


def check_assignments(gm: fx.GraphModule) -> None:
    """A buffer assignment the graph writes in place must not change the buffer's shape or dtype."""
    for node in gm.graph.nodes:
        if info(node).assignment is None:
            continue
        change, where = info(node).assignment
        buffer, value = (tensor_meta(a) for a in node.args)
        if buffer is None or value is None:
            continue  # the run did not get there
        if (buffer.shape, buffer.dtype) != (value.shape, value.dtype):
            raise TraceError(
                f"forward assigns buffer '{change.qualname}' ({tuple(buffer.shape)} {buffer.dtype}) "
                f"{tuple(value.shape)} {value.dtype} (at {where}): lumos_fx keeps a buffer update in the graph "
                "as an in-place copy, which cannot change the buffer's shape or dtype.\nfix: give the new value "
                "the buffer's shape and dtype, or register the buffer with the shape it takes."
            )


def _causes(queries: list[IsinstanceQuery], gm: fx.GraphModule, assignments: dict) -> str:
    lines = [f"  isinstance() answered {q.answer} at {q.where}" for q in queries if q.node.graph is gm.graph]
    lines += [f"  assignment to self.{attr} at {f.filename}:{f.lineno}: {(f.line or '').strip()}"
              for (_, attr), f in assignments.items()]
    return ("decisions the trace took in Python:\n" + "\n".join(lines) + "\n") if lines else ""


def check_output(model: nn.Module, gm: fx.GraphModule, observed: Observation, output,
                 queries: list[IsinstanceQuery], assignments: dict, mode: str = "eval") -> None:
    """The graph's `output` on the example inputs equals the model's."""
    err, scale = output_error(observed.output, output)
    if not within_tolerance(err, scale):
        raise TraceError(
            f"the traced graph of {type(model).__name__} does not compute what its forward computes on "
            f"example_inputs in {mode} mode (largest difference {err:.3g}, output scale {scale:.3g}): fx "
            "recorded one run of forward, and a Python decision it took does not hold.\n"
            + _causes(queries, gm, assignments) + _FIX
        )


def check_state(model: nn.Module, gm: fx.GraphModule, observed: Observation, before: dict[Change, tuple],
                where, buffers: dict[str, torch.Tensor]) -> None:
    """The graph changes the same buffers and parameters as one call of the model, to the same
    values. `buffers`: the graph's buffers before the call (a write of the same value, as a
    counter only train mode advances makes in eval mode, changes nothing)."""
    moved = {c for c in changed(before, fingerprint(gm)) if c.kind != "attribute"}
    for change in sorted(moved | set(observed.after), key=lambda c: c.qualname):
        expected, got = observed.after.get(change), tensor_at(gm, change)
        if expected is None and got is not None and change.qualname in buffers \
                and torch.equal(got, buffers[change.qualname]):
            continue
        same = expected is not None and got is not None and expected.shape == got.shape \
            and within_tolerance(*output_error(expected, got))
        if not same:
            line = where(change)
            raise TraceError(
                f"forward of {type(model).__name__} changes {change.kind} '{change.qualname}' in a way the traced "
                f"graph does not repeat{f' (at {line})' if line else ''}: after one call on example_inputs "
                f"{'the graph leaves it unchanged' if got is not None and change not in moved else 'they differ'}.\n"
                "fix: update the buffer with a tensor operation (self.m.mul_(0.9).add_(...), or "
                "self.m = 0.9 * self.m + ... for a registered buffer), keep the state outside forward, or "
                "move the code into a submodule lumos_fx calls as one op: Config(leaf_modules=[...])."
            )


def check_train_mode(model: nn.Module, gm: fx.GraphModule, trained: Observation, inputs: tuple, queries,
                     assignments, where, stateful_params: list[str]) -> None:
    """In train mode the graph equals the model, output and state, under the same seed.
    Only where the model is deterministic there: its two train-mode calls (under other
    seeds, one state update apart) give the same output. With dropout, no seed makes two
    different programs draw the same numbers in general."""
    if trained.error is not None or not within_tolerance(*output_error(trained.output, trained.second)):
        return
    before, buffers = fingerprint(gm), buffer_values(gm)
    with preserved(gm, stateful_params), in_mode(gm, True), torch.no_grad(), \
            torch.random.fork_rng(rng_devices(model)):
        torch.manual_seed(0)
        got = gm(*fresh(inputs))
        check_output(model, gm, trained, got, queries, assignments, mode="train")
        check_state(model, gm, trained, before, where, buffers)
