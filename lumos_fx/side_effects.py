"""What a forward changes besides its output: buffers, parameters and Python attributes.

A traced graph holds tensor operations. A forward that also changes its module (a counter
``self.calls += 1``, a running mean written by hand, ``self.last = h``) computes something
the graph may not repeat. lumos_fx runs a copy of the model twice on the example inputs
(:func:`observe`) and compares its state after each call: what a call changes every time is
a side effect the trace must hold (a buffer updated in place, which the graph keeps) or
refuse (Python state, which it cannot hold). :func:`preserved` keeps lumos_fx's own runs of
a model from advancing that state.
"""

from __future__ import annotations

import copy
import linecache
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import fx, nn

from .errors import is_library_file
from .inputs import fresh

MODULE_INTERNALS = frozenset(nn.Module().__dict__)


@dataclass(frozen=True)
class Change:
    """An attribute of a module that a forward changed."""

    module: str  # qualified name of the module ('' for the model itself)
    attr: str
    kind: Literal["buffer", "parameter", "attribute"]

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.attr}" if self.module else self.attr


class _Ref:
    """An object compared by identity (kept alive, so its id is never reused)."""

    __slots__ = ("obj",)

    def __init__(self, obj) -> None:
        self.obj = obj

    def __eq__(self, other) -> bool:
        return isinstance(other, _Ref) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _token(value) -> tuple:
    """What must stay equal for `value` to be unchanged: a tensor's identity and version
    counter (every in-place write bumps it), a container's identity and items, a number's value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", _Ref(value), value._version)
    if isinstance(value, dict):
        return ("dict", _Ref(value), tuple((k, _Ref(v)) for k, v in value.items()))
    if isinstance(value, (list, set)):
        return (type(value).__name__, _Ref(value), tuple(_Ref(v) for v in value))
    if isinstance(value, tuple):
        return ("tuple", tuple(_token(v) for v in value))
    if value is None or isinstance(value, (bool, int, float, complex, str)):
        return ("value", type(value), repr(value))  # repr: NaN equals NaN
    return ("object", _Ref(value))


def fingerprint(model: nn.Module) -> dict[Change, tuple]:
    """A token per parameter, buffer and Python attribute of every module of `model`."""
    tokens = {}
    for qualname, module in model.named_modules():
        for name, tensor in module._parameters.items():
            tokens[Change(qualname, name, "parameter")] = _token(tensor)
        for name, tensor in module._buffers.items():
            tokens[Change(qualname, name, "buffer")] = _token(tensor)
        for name, value in vars(module).items():
            if name not in MODULE_INTERNALS:
                tokens[Change(qualname, name, "attribute")] = _token(value)
    return tokens


def changed(before: dict[Change, tuple], after: dict[Change, tuple]) -> list[Change]:
    return [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]


def tensor_at(model: nn.Module, change: Change) -> torch.Tensor | None:
    try:
        module = model.get_submodule(change.module)
    except AttributeError:
        return None
    value = getattr(module, change.attr, None)
    return value if isinstance(value, torch.Tensor) else None


@dataclass
class Observation:
    """Two calls of a copy of the model on the example inputs, in one mode."""

    output: Any = None  # the first call's output
    error: Exception | None = None  # what the first call raised, if it did
    after: dict[Change, torch.Tensor] = field(default_factory=dict)  # tensors the first call changed, after it
    per_call: list[Change] = field(default_factory=list)  # what the second call changed again
    second: Any = None  # the second call's output (in train mode, under another seed)

    def mutated(self, kind: str) -> list[Change]:
        return [c for c in self.per_call if c.kind == kind]


def rng_devices(model: nn.Module) -> list[torch.device]:
    """The accelerators whose random state a run of `model` may draw from."""
    return list({t.device for t in model.state_dict().values()  # extra state may be any object
                 if isinstance(t, torch.Tensor) and t.device.type == "cuda"})


def _two_calls(twin: nn.Module, inputs: tuple, training: bool) -> Observation:
    """Call `twin` twice on copies of `inputs` (in train mode, the first call under seed 0
    and the second under seed 1) and record what each call changed. In eval mode, a first
    call that changed nothing is not repeated."""
    twin.train(training)
    start = fingerprint(twin)
    torch.manual_seed(0)
    try:
        output = twin(*fresh(inputs))
    except Exception as e:  # reported by the trace, which names the failing node
        return Observation(error=e)
    first = fingerprint(twin)
    moved = changed(start, first)
    if not moved and not training:
        return Observation(output)
    after = {c: tensor_at(twin, c).detach().clone() for c in moved if c.kind != "attribute"}
    torch.manual_seed(1)
    try:
        second = twin(*fresh(inputs))
    except Exception:  # a second call fails: every change of the first counts as per call
        return Observation(output, None, after, changed(start, first))
    return Observation(output, None, after, changed(first, fingerprint(twin)), second)


def observe(model: nn.Module, inputs: tuple) -> tuple[Observation, Observation, nn.Module]:
    """Two calls of a deep copy of `model` in eval mode, then two in train mode, each pair
    from the model's state; returns both observations and the copy, in the model's state
    again (to be traced). The model, the inputs and the random state stay as they were."""
    twin = copy.deepcopy(model)
    flags = [(m, m.training) for m in twin.modules()]
    versions = {name: (p, p._version) for name, p in twin.named_parameters()}
    seen = []
    with torch.no_grad(), torch.random.fork_rng(rng_devices(model)):
        for training in (False, True):
            with preserved(twin):
                seen.append(_two_calls(twin, inputs, training))
                for name, (p, version) in versions.items():  # a forward that writes its weights
                    if p._version != version:
                        p.copy_(model.get_parameter(name))
                        versions[name] = (p, p._version)
    for m, flag in flags:
        m.training = flag
    return seen[0], seen[1], twin


def _python_state(module: nn.Module) -> list[tuple[dict, str, Any]]:
    """``(owner's __dict__, name, value)`` of every Python attribute of the modules inside
    `module` (a container copied one level deep). A GraphModule's own attributes are fx's
    (its code, its graph): not the model's state."""
    state = []
    for sub in module.modules():
        if isinstance(sub, fx.GraphModule):
            continue
        for name, value in vars(sub).items():
            if name not in MODULE_INTERNALS:
                state.append((vars(sub), name, copy.copy(value) if isinstance(value, (list, dict, set)) else value))
    return state


def _restore_python_state(state: list[tuple[dict, str, Any]]) -> None:
    for attrs, name, value in state:
        now = attrs.get(name)
        if not (isinstance(value, (list, dict, set)) and type(now) is type(value)):
            attrs[name] = value
            continue
        now.clear()  # in place: other references to the container see it restored
        if isinstance(now, list):
            now.extend(value)
        else:
            now.update(value)


def buffer_values(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every buffer of `module`, by name."""
    return {name: t.detach().clone() for name, t in module.named_buffers()}


@contextmanager
def preserved(module: nn.Module, extra: list[str] = (), tensors: bool = True):
    """Run code on `module` and put its state back as it was: its buffers, the parameters
    named in `extra`, and the Python attributes of its submodules (a leaf module counting
    its calls); only the Python attributes without `tensors`. lumos_fx's own runs of a
    model never advance its state."""
    saved = buffer_values(module) if tensors else {}
    saved.update({name: module.get_parameter(name).detach().clone() for name in extra})
    python = _python_state(module)
    try:
        yield module
    finally:
        _restore_python_state(python)
        with torch.no_grad():
            for name, value in saved.items():
                owner, _, attr = name.rpartition(".")
                holder = module.get_submodule(owner)
                now = getattr(holder, attr, None)
                if isinstance(now, torch.Tensor) and now.shape == value.shape and now.dtype == value.dtype:
                    now.copy_(value)
                elif attr in holder._buffers:
                    holder._buffers[attr] = value


def _token_at(model: nn.Module, change: Change) -> tuple | None:
    module = model.get_submodule(change.module)
    holder = {"parameter": module._parameters, "buffer": module._buffers, "attribute": vars(module)}[change.kind]
    return _token(holder[change.attr]) if change.attr in holder else None


def locate(model: nn.Module, inputs: tuple, change: Change) -> str | None:
    """``file:line: code`` of the line of user code that makes `change`: a copy of the model
    runs once under a line tracer (:func:`sys.settrace`) that watches the attribute, and the
    line last run before it changed is the one. Slow; only for an error message."""
    twin = copy.deepcopy(model).eval()
    state = {"token": _token_at(twin, change), "last": None, "found": None}

    def watch(frame, event, arg):
        if state["found"] is not None:
            return None
        if _token_at(twin, change) != state["token"]:
            state["found"] = state["last"]
            return None
        if is_library_file(frame.f_code.co_filename):
            return None  # not into torch's own code: a change there shows at the next user line
        if event == "line":
            state["last"] = (frame.f_code.co_filename, frame.f_lineno)
        return watch

    previous = sys.gettrace()
    with torch.no_grad(), torch.random.fork_rng(rng_devices(model)):
        sys.settrace(watch)
        try:
            twin(*fresh(inputs))
        except Exception:
            pass  # the line found so far, if any, is still the answer
        finally:
            sys.settrace(previous)
    if state["found"] is None and _token_at(twin, change) != state["token"]:
        state["found"] = state["last"]
    if state["found"] is None:
        return None
    filename, lineno = state["found"]
    return f"{filename}:{lineno}: {linecache.getline(filename, lineno).strip()}"


def source_line(model: nn.Module, inputs: tuple, change: Change,
                recorded: dict[tuple[str, str], traceback.FrameSummary]) -> str | None:
    """``file:line: code`` where the forward makes `change`: the assignment the tracer saw,
    else the line :func:`locate` finds."""
    frame = recorded.get((change.module, change.attr))
    if frame is not None:
        return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return locate(model, inputs, change)
