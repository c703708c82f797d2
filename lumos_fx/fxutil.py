"""Small helpers over torch.fx nodes shared by the pipeline stages."""

from __future__ import annotations

import copy
import warnings
from typing import Iterator

import torch
from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

from .errors import user_line_of_stack_trace
from .node_info import info


def tensor_meta(node: fx.Node) -> TensorMetadata | None:
    """ShapeProp's record of `node`'s output when it is a single tensor, else None."""
    meta = node.meta.get("tensor_meta")
    return meta if isinstance(meta, TensorMetadata) else None


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    meta = tensor_meta(node)
    return tuple(meta.shape) if meta is not None else None


def is_tensor(node) -> bool:
    return isinstance(node, fx.Node) and tensor_meta(node) is not None


def tensor_args(node: fx.Node) -> Iterator[fx.Node]:
    """Every input node of `node` that carries a single tensor, in argument order, once each."""
    seen = set()
    for arg in node.all_input_nodes:
        if arg not in seen and is_tensor(arg):
            seen.add(arg)
            yield arg


def op_name(node: fx.Node, gm: fx.GraphModule) -> str:
    """A short human name of what `node` does: module class, function or method."""
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} '{node.target}'"
    if node.op == "call_function":
        mod = getattr(node.target, "__module__", None) or ""
        name = getattr(node.target, "__name__", str(node.target))
        if mod in ("_operator", "operator"):
            return f"operator.{name}"
        if mod.startswith("torch"):
            return f"{mod}.{name}"
        return name
    if node.op == "call_method":
        return f"Tensor.{node.target}()"
    if node.op == "get_attr":
        return f"attribute '{node.target}'"
    if node.op == "placeholder":
        return f"input '{node.target}'"
    return node.op


def input_name(node: fx.Node) -> str:
    """A model input's name in the user's terms: ``x``, ``batch['x']``, ``args[1]``."""
    return info(node).input or node.target


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """`op_name` plus the user's source line when fx recorded it."""
    where = user_line_of_stack_trace(node.stack_trace)
    return f"{op_name(node, gm)} at {where}" if where else op_name(node, gm)


def normalize_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's tensors live (its first parameter or buffer; CPU if it has none)."""
    tensor = next(iter(module.parameters()), None)
    tensor = tensor if tensor is not None else next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def owner_module(node: fx.Node) -> str:
    """The innermost submodule whose forward made `node` ('' for the root's own forward)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def free_attr_name(module: torch.nn.Module, name: str) -> str:
    """`name`, or `name` with underscores appended, that `module` has no attribute of yet."""
    while hasattr(module, name):
        name += "_"
    return name


def fetch_attr(gm: fx.GraphModule, target: str):
    """The object a get_attr node reads (as torch's own fx passes resolve it)."""
    obj = gm
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


def copy_instrumented(gm: fx.GraphModule) -> fx.GraphModule:
    """A deep copy of an instrumented or pruned model that shares its plan (read, never
    changed, but for a latency model's savings scale, which timing a copy's cut refines).
    torch's own copy of the pytree specs of a forward taking containers warns of its
    deprecated LeafSpec: not the user's to act on, so that warning is not shown."""
    plan = gm.meta.get("lumos")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        return copy.deepcopy(gm, memo={id(plan): plan} if plan is not None else None)
