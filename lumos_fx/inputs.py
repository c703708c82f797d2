"""The model's example inputs, bound to its forward's signature.

fx traces one placeholder per tensor. A forward's arguments may be more than tensors:

- a dict, list or tuple of tensors (``forward(self, batch)`` with ``batch["x"]``) is
  flattened as torch.fx flattens pytrees (:data:`torch.fx._symbolic_trace.PH` for every
  tensor leaf): one placeholder per leaf, and the traced forward keeps the signature;
- ``*args`` gets one placeholder per value the example passes, and ``**kwargs`` none (the
  example passes no keyword arguments);
- other values (numbers, strings, None, defaults not given) are constants of the trace.

Each input leaf has a name in the user's terms: ``x``, ``batch['x']``, ``args[1]``. The
leaves are listed in the order fx creates their placeholders.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx._symbolic_trace import PH
from torch.utils import _pytree as pytree

from . import pyg_trace
from .errors import InputError


@dataclass(frozen=True)
class InputLeaf:
    """One placeholder of the traced model: its name in the user's terms, whether it is a
    tensor, and where it lies in the example inputs (a pytree key path; None for a default
    not passed)."""

    name: str
    tensor: bool
    path: tuple | None = None


@dataclass
class BoundInputs:
    """Example inputs bound to a forward: what fx needs to trace it, and the input leaves."""

    args: tuple  # the example inputs, as the user passes them
    concrete: dict[str, Any]  # fx's concrete_args: constants, and PH trees for containers
    varargs: tuple  # the values the example passes to ``*args``
    var_positional: str | None  # the name of the forward's ``*args``, if it has one
    var_keyword: str | None  # the name of the forward's ``**kwargs``, if it has one
    leaves: list[InputLeaf]
    examples: list  # each leaf's example value

    @property
    def structured(self) -> bool:
        """True when an argument is a container (fx then generates pytree code that flattens it)."""
        return any(not pytree.tree_is_leaf(v) for v in self.concrete.values())


def normalize_example_inputs(example_inputs) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    hint = ""
    if isinstance(example_inputs, dict):
        hint = (" A dict is read as one argument: for forward(self, batch) with a dict batch, pass "
                "example_inputs=(batch,).")
    raise InputError(
        f"example_inputs must be a tuple of the model's positional arguments, e.g. (x,), "
        f"got {type(example_inputs).__name__}.{hint}"
    )


def _leaves(name: str, value, position: int | None) -> list[tuple[InputLeaf, Any]]:
    """The leaves of one argument with their examples, in pytree order; `position` is its
    index in the example inputs."""
    paths, _ = pytree.tree_flatten_with_path(value)
    return [(InputLeaf(name + pytree.keystr(path), isinstance(leaf, torch.Tensor),
                       None if position is None else (pytree.SequenceKey(position), *path)), leaf)
            for path, leaf in paths]


def bind(model: nn.Module, example_inputs) -> BoundInputs:
    """Bind `example_inputs` to ``model.forward``: fx's concrete arguments and the input leaves."""
    args = normalize_example_inputs(example_inputs)
    sig = inspect.signature(model.forward)
    try:
        bound = sig.bind_partial(*args)
    except TypeError as e:
        raise InputError(
            f"example_inputs do not match {type(model).__name__}.forward{sig}: {e}. "
            f"Pass one value per positional argument of forward, e.g. example_inputs=(x,)."
        ) from None
    concrete: dict[str, Any] = {}
    leaves: list[tuple[InputLeaf, Any]] = []
    var_positional = var_keyword = None
    varargs: tuple = ()
    for position, (name, param) in enumerate(sig.parameters.items()):
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) or position >= len(args):
            position = None
        if param.kind is param.VAR_KEYWORD:
            var_keyword = name
            continue
        if param.kind is param.VAR_POSITIONAL:
            var_positional, varargs = name, tuple(bound.arguments.get(name, ()))
            for i, value in enumerate(varargs):
                pyg_trace.reject_data(value, f"{name}[{i}]", model)
            continue
        if name in bound.arguments:
            value = bound.arguments[name]
            pyg_trace.reject_data(value, name, model)
        elif param.default is not param.empty:
            value = param.default
        else:
            raise InputError(
                f"example_inputs give no value for argument '{name}' of "
                f"{type(model).__name__}.forward{sig}; pass it in example_inputs."
            )
        leaves += _leaves(name, value, position)
        if not isinstance(value, torch.Tensor):
            # fx makes a placeholder of every leaf of a concrete argument; its tensors must be
            # inputs (PH), not constants baked into the graph.
            concrete[name] = pytree.tree_map(lambda v: PH if isinstance(v, torch.Tensor) else v, value)
    # fx makes the placeholders of *args last, after keyword-only arguments.
    first = len(args) - len(varargs)
    for i, value in enumerate(varargs):
        leaves += _leaves(f"{var_positional}[{i}]", value, first + i)
    result = BoundInputs(args, concrete, varargs, var_positional, var_keyword, [leaf for leaf, _ in leaves],
                         [example for _, example in leaves])
    if result.structured and (var_positional or var_keyword):
        raise InputError(
            f"{type(model).__name__}.forward{sig} takes *args or **kwargs and a container argument; "
            "lumos_fx traces one of the two. Wrap the model in a module whose forward takes the tensors "
            "as named arguments."
        )
    _check_finite(result, model)
    return result


def _check_finite(bound: BoundInputs, model: nn.Module) -> None:
    """NaN or inf in an example input would make every check on it pass or fail for nothing."""
    for leaf, value in zip(bound.leaves, bound.examples):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise InputError(
                f"example input '{leaf.name}' of {type(model).__name__} holds {bad} NaN or inf values "
                f"(of {value.numel()}): lumos_fx checks the traced and the pruned model on the example "
                "inputs, which a non-finite input cannot test. Pass finite example inputs."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"example input '{leaf.name}' of {type(model).__name__} is {value}; pass a finite value.")


def fresh(inputs):
    """A copy of `inputs` whose tensors are clones: a forward that writes its input in place
    (``x.mul_(2)``) changes the copy, never the user's tensors."""
    return pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, inputs)
