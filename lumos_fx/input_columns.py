"""The columns of each model input that a pruned model reads (feature selection's result).

Every floating-point model input with a feature dim is listed, gated or not: an input kept
whole lists all its columns. The feature dim is counted from the end (``-1`` for the
columns of a ``(batch, features)`` input, ``-3`` for the channels of ``(N, C, H, W)``), as
the gates broadcast, so the selection holds for inputs with more or fewer leading dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx
from torch.utils import _pytree as pytree

from .fxutil import free_attr_name, input_name, module_device, tensor_meta


@dataclass(frozen=True)
class InputColumns:
    """The columns one model input keeps."""

    name: str  # the input's name in the user's terms
    node: str  # its placeholder
    dim: int  # the feature dim, negative: counted from the end
    kept: tuple[int, ...]
    names: tuple[str, ...]  # the kept columns' feature names
    size: int  # the columns the input has
    path: tuple | None  # where it lies in example_inputs

    @property
    def cut(self) -> bool:
        return len(self.kept) < self.size


def input_columns(gm: fx.GraphModule, plan, kept_of) -> list[InputColumns]:
    """The columns of every feature input; `kept_of(space)` gives the kept indices of a space."""
    leaves = {leaf.name: leaf for leaf in gm.meta.get("lumos_inputs", [])}
    out = []
    for node in gm.graph.nodes:
        meta, space = tensor_meta(node), plan.space_of(node.name)
        if node.op != "placeholder" or space is None or not meta.dtype.is_floating_point:
            continue
        name = input_name(node)
        kept = tuple(int(i) for i in kept_of(space))
        names = plan.feature_names.get(node.name) or [f"{name}[{j}]" for j in range(space.size)]
        leaf = leaves.get(name)
        out.append(InputColumns(name, node.name, space.dim - len(meta.shape), kept, tuple(names[i] for i in kept),
                                space.size, leaf.path if leaf is not None else None))
    return out


def select_in_graph(gm: fx.GraphModule, columns: list[InputColumns]) -> None:
    """Make the model select its kept columns itself (``x.index_select(dim, kept)``), so that
    it still takes every feature: a drop-in replacement of the original."""
    placeholders = {n.name: n for n in gm.graph.nodes if n.op == "placeholder"}
    last = list(placeholders.values())[-1]
    for col in columns:
        node = placeholders[col.node]
        if not col.cut or not col.kept or not node.users:
            continue
        buffer = free_attr_name(gm, f"{node.target}_kept")
        gm.register_buffer(buffer, torch.as_tensor(col.kept, dtype=torch.long, device=module_device(gm)))
        with gm.graph.inserting_after(last):
            index = gm.graph.get_attr(buffer)
        with gm.graph.inserting_after(index):
            # The method, not torch.index_select, which torch_geometric replaces with its own.
            selected = gm.graph.call_method("index_select", (node, col.dim, index))
        node.replace_all_uses_with(selected, delete_user_cb=lambda user, sel=selected: user is not sel)
        last = selected


def select(inputs: tuple, columns: list[InputColumns]) -> tuple:
    """`inputs` (as passed to the original model) with only the kept columns of each input:
    what a model pruned with ``shrink_inputs=True`` takes."""
    by_path = {col.path: col for col in columns if col.cut and col.path is not None}
    paths, spec = pytree.tree_flatten_with_path(tuple(inputs))
    leaves = []
    for path, value in paths:
        col = by_path.get(tuple(path))
        if col is not None:
            value = value.index_select(col.dim, torch.as_tensor(col.kept, dtype=torch.long, device=value.device))
        leaves.append(value)
    return pytree.tree_unflatten(leaves, spec)


def kept_features(columns: list[InputColumns]) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """``pruned.kept_features`` and ``pruned.kept_feature_indices``: per input, by name and index."""
    return ({c.name: list(c.names) for c in columns}, {c.name: list(c.kept) for c in columns})
