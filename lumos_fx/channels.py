"""Stage 2: the channel dependency graph.

Nodes of the graph (a ``networkx.Graph``) are **channel spaces**: the channels of one fx
node's output along its channel dim, or of one parameter tensor along one dim. An edge
*ties* channels of two spaces: arrays ``a_idx, b_idx`` say that channel ``a_idx[k]`` of one
space and ``b_idx[k]`` of the other are the same channel. Every index map of the design
(identity, cat offset, split slice, block expansion, head reshape) is such a pair of arrays.

A connected component is a **group**: its channels must be removed consistently. Inside a
group, the equivalence classes of tied channels are its **units**; one gate value per unit.
A group is prunable when no space in it is blocked (an op lumos_fx has no rule for, a model
output, ...) and some consumer reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import ClassVar

import networkx as nx
import numpy as np


class _Key:
    """A channel-space key: hashable, typed; ``str()`` gives its text for messages and names."""

    text: ClassVar[str]

    def __str__(self) -> str:
        return self.text.format(**{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class NodeKey(_Key):
    """The space of node `node`'s output along its channel dim."""

    text: ClassVar[str] = "node:{node}"
    node: str


@dataclass(frozen=True)
class ParamKey(_Key):
    """The space of parameter (or buffer) `param` along `dim`."""

    text: ClassVar[str] = "param:{param}:{dim}"
    param: str
    dim: int


@dataclass(frozen=True)
class HeadDimsKey(_Key):
    """The dims inside the heads of one attention site (:mod:`lumos_fx.head_dims`)."""

    text: ClassVar[str] = "dims:{site}"
    site: str


@dataclass(frozen=True)
class NodeDimsKey(_Key):
    """The space of node `node`'s output along its head dims (its channel dim holds the heads)."""

    text: ClassVar[str] = "node:{node}#dims"
    node: str


@dataclass(frozen=True)
class RefinedKey(_Key):
    """A space that gates the channels of space `base` a second time (a head's rows of a
    projection, per (head, dim)); `tag` names the site and operand."""

    text: ClassVar[str] = "{base}#{tag}"
    base: "SpaceKey"
    tag: str


@dataclass(frozen=True)
class PartKey(_Key):
    """The channels input `index` of a join (``torch.cat``) gives node `node`'s output, where
    that input has no channels on the joined dim (a grid of coordinates beside the features)."""

    text: ClassVar[str] = "node:{node}#part{index}"
    node: str
    index: int


SpaceKey = NodeKey | ParamKey | HeadDimsKey | NodeDimsKey | RefinedKey | PartKey


def slug(key: SpaceKey) -> str:
    """`key` as a Python identifier fragment (a buffer name)."""
    return re.sub(r"\W", "_", str(key).partition(":")[2])


@dataclass
class Space:
    """The channels of a node's output along ``dim``, or of a parameter along ``dim``."""

    key: SpaceKey
    size: int
    dim: int
    node: str | None = None
    param: str | None = None
    producer: bool = False
    title: str | None = None  # what reports call it: module target, input name, node name
    group: int = -1
    units: np.ndarray | None = None  # unit id (within the group) of each channel
    # A space that refines another (same tensor, same dim) gates the channels `covers` of it
    # a second time: a head's q row (h, d) lives while head h and dim d both do.
    refines: SpaceKey | None = None
    covers: np.ndarray | None = None

    @property
    def label(self) -> str:
        return self.param if self.param is not None else (self.title or self.node)


@dataclass
class Consumer:
    """A node whose input ``input`` (a space of a prunable group) is gated.

    ``fold`` lists parameter spaces that multiply the input channels linearly: prune()
    scales them by the gate, which is exact because the consumer is linear in that input.
    The parameters may belong to a producer upstream (``folds_at``): a gate on a query's
    head dims folds into the query projection's rows.
    """

    node: str
    input: str
    space: SpaceKey
    fold: list[SpaceKey] = field(default_factory=list)
    folds_at: str | None = None  # the node that reads the `fold` parameters, when not `node`


@dataclass
class Group:
    id: int
    name: str
    spaces: list[SpaceKey]
    n_units: int
    blocked: list[str]
    consumers: list[Consumer]

    @property
    def prunable(self) -> bool:
        return not self.blocked and bool(self.consumers) and self.n_units > 0




class ChannelGraph:
    """Spaces, ties, blocks and consumers, turned into groups by :meth:`groups`."""

    def __init__(self) -> None:
        self.graph = nx.Graph()
        self.spaces: dict[SpaceKey, Space] = {}
        self.blocks: dict[SpaceKey, list[str]] = {}
        self.consumers: list[Consumer] = []

    def add(self, space: Space) -> Space:
        if space.key in self.spaces:
            raise KeyError(f"space {space.key} exists")
        self.spaces[space.key] = space
        self.graph.add_node(space.key)
        return space

    def tie(self, a: Space, b: Space, a_idx=None, b_idx=None) -> None:
        """Tie channel ``a_idx[k]`` of ``a`` to channel ``b_idx[k]`` of ``b`` (default: identity)."""
        a_idx = np.arange(a.size) if a_idx is None else np.asarray(a_idx, dtype=np.int64)
        b_idx = np.arange(b.size) if b_idx is None else np.asarray(b_idx, dtype=np.int64)
        if a_idx.shape != b_idx.shape:
            raise ValueError(f"tie {a.key} ~ {b.key}: {a_idx.shape} vs {b_idx.shape} indices")
        if a.key == b.key:
            return
        data = self.graph.get_edge_data(a.key, b.key)
        if data is None:
            self.graph.add_edge(a.key, b.key, ties=[])
            data = self.graph.get_edge_data(a.key, b.key)
        # Edge data is undirected: store each pair with its endpoint names.
        data["ties"].append(((a.key, a_idx), (b.key, b_idx)))

    def block(self, space: Space, reason: str) -> None:
        reasons = self.blocks.setdefault(space.key, [])
        if reason not in reasons:
            reasons.append(reason)

    def consume(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)

    def groups(self) -> list[Group]:
        """Connected components as groups; assigns ``group`` and ``units`` to every space."""
        order = list(self.spaces)
        offset = {}
        total = 0
        for key in order:
            offset[key] = total
            total += self.spaces[key].size
        a_all, b_all = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for _, _, data in self.graph.edges(data=True):
            for (ka, ia), (kb, ib) in data["ties"]:
                a_all.append(ia + offset[ka])
                b_all.append(ib + offset[kb])
        labels = _connected_labels(total, np.concatenate(a_all), np.concatenate(b_all))

        position = {key: i for i, key in enumerate(order)}
        consumers_of: dict[str, list[Consumer]] = {}
        for c in self.consumers:
            consumers_of.setdefault(c.space, []).append(c)
        groups = []
        components = sorted(nx.connected_components(self.graph), key=lambda c: min(position[k] for k in c))
        for gid, component in enumerate(components):
            keys = sorted(component, key=position.__getitem__)
            # Units are numbered in order of first appearance, so the first space of the
            # group (e.g. the model input) has units 0..n-1 in channel order.
            lab = np.concatenate([labels[offset[k]: offset[k] + self.spaces[k].size] for k in keys])
            uniq, first, inverse = np.unique(lab, return_index=True, return_inverse=True)
            rank = np.empty(len(uniq), dtype=np.int64)
            rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
            units = rank[inverse]
            start = 0
            for key in keys:
                space = self.spaces[key]
                space.group = gid
                space.units = units[start: start + space.size]
                start += space.size
            blocked = [f"{r} (at {self.spaces[k].label})" for k in keys for r in self.blocks.get(k, [])]
            consumers = [c for k in keys for c in consumers_of.get(k, [])]
            groups.append(Group(gid, _group_name(self.spaces, keys), keys, len(uniq), blocked, consumers))
        return groups


def _group_name(spaces: dict[str, Space], keys: list[str]) -> str:
    """A group is named after its first producer (model input, layer output, attribute)."""
    for key in keys:
        space = spaces[key]
        if space.producer:
            return space.label
    return spaces[keys[0]].label


def _connected_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Label of each of ``n`` elements: the smallest element connected to it by the pairs (a, b).

    Vectorised union-find: hook the larger root of every edge onto the smaller, then jump
    pointers until every element points at its root; repeat until no edge joins two roots.
    """
    parent = np.arange(n, dtype=np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        differ = lo != hi
        if not differ.any():
            return parent
        np.minimum.at(parent, hi[differ], lo[differ])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
