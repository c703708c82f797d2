r"""Gates on the dimensions inside attention heads.

Attention computes, per head :math:`h`,

.. math::
    o_h = \operatorname{softmax}\!\left(s\, q_h k_h^\top + M\right) v_h,
    \qquad y = W_o \left[o_1 \,\|\, \dots \,\|\, o_H\right] + b_o

with :math:`q_h, k_h \in \mathbb{R}^{N \times D}` and :math:`v_h \in \mathbb{R}^{N \times D_v}`
slices of projections :math:`q = W_q x + b_q` (and so on). The head gates of the channel
graph remove whole heads. This pass adds two more groups per attention:

- **q·k dims**: dimension :math:`d` of every head's query and key. They meet only in
  :math:`q_h k_h^\top = \sum_d q_{hd} k_{hd}`, so a gate :math:`z_d` on the query,
  :math:`\sum_d z_d q_{hd} k_{hd}`, folds exactly into the rows :math:`(h, d)` of
  :math:`W_q, b_q`, and a closed :math:`d` leaves both projections.
- **v dims**: dimension :math:`e` of every head's value, which only the output projection
  reads: the gate sits in front of :math:`W_o` and folds into its columns :math:`(h, e)`.

A dim is cut in every head at once, so heads stay the same width and the pruned model keeps
batched attention (``(B, H', N, D')``); the scale :math:`s` stays the original
:math:`1/\sqrt{D}`. A fused ``qkv`` projection split by one ``reshape(B, N, 3, H, D)`` gives
q, k and v one shared dims gate (one literal ``D`` sizes all three).

The attentions are the nodes whose rule names their operands
(:meth:`~lumos_fx.rules.api.Rule.attention`). The pass recognises a site by walking from
the attention's q, k, v back to the projection that made each one, and from its output
forward to the projection that reads it (a node whose rule gives its weights:
:meth:`~lumos_fx.rules.api.Rule.projection`; ``nn.Linear``, ``F.linear``, transformers'
``Conv1D`` as ``torch.addmm``), through the ops whose rules give them a
:class:`~lumos_fx.rules.api.HeadRole`: one reshape that splits (or merges) the last dim,
moves and picks of dims (GPT-2's ``split`` of one projection into q, k and v), scalar
products. The walk is checked by running it on tensors of channel indices, which gives the
map from (head, dim) to projection row or column without trusting any reading of the code;
every tensor on the projection's side of the split has its (head, dim) channels refined too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from .channels import Consumer, HeadDimsKey, NodeDimsKey, RefinedKey, Space
from .connect import Analysis
from .fxutil import describe, normalize_dim, shape_of
from .rules import REGISTRY
from .rules.api import HeadRole, Projection, axes_read, run_on, varargs


class Refused(Exception):
    """These head dims cannot be cut: ``reason``; ``loud`` when summary() should say so (a
    batched product that turns out not to be an attention is skipped without a word)."""

    def __init__(self, reason: str, loud: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.loud = reason, loud


class Chain:
    """The ops between a projection and one attention operand (or between the attention
    output and a projection), and ``rows[h, d]``: the projection's output (or input) channel
    that dim ``d`` of head ``h`` comes from (or goes to)."""

    def __init__(self, linear: fx.Node, projection: Projection, nodes: list[fx.Node], rows: np.ndarray,
                 dims: dict[fx.Node, int], flat: dict[fx.Node, np.ndarray]) -> None:
        self.linear = linear
        self.projection = projection
        self.nodes = nodes
        self.rows = rows
        self.dims = dims  # where each tensor between the split and the merge has the head dims
        # Each tensor outside the split (the projection's side) that holds (head, dim) channels
        # on its last dim: their positions there, in the order of ``rows.reshape(-1)``.
        self.flat = flat


class Site:
    """One dims group: the chains whose (head, dim) rows it ties, the gate in front of
    `gate_node`'s input `gate_input`, and the chain whose parameters the gate folds into.

    A q·k site gates the query along its last dim and folds into the query projection's
    rows; a v site gates the output projection's input and folds into its columns.
    """

    def __init__(self, node: fx.Node, kind: str, chains: list[Chain], gate_node: fx.Node,
                 gate_input: fx.Node, fold: Chain) -> None:
        self.node = node
        self.kind = kind
        self.chains = chains
        self.gate_node = gate_node
        self.gate_input = gate_input
        self.fold = fold
        self.size = chains[0].rows.shape[1]
        self.tag = f"{node.name}.{kind}"

    def nodes(self) -> set[fx.Node]:
        return {n for c in self.chains for n in c.nodes} | {c.linear for c in self.chains}

    def add(self, an) -> None:
        operands = self.chains if self.kind == "qk" else self.chains[:1]
        lins = list(dict.fromkeys(an.space(c.linear).title for c in operands))
        # q and k split by one reshape of one projection split v alike: the group is all of a
        # head's dims.
        one_reshape = self.kind == "qk" and set(self.chains[0].dims) & set(self.chains[1].dims)
        kind = "head dims" if len(lins) == 1 and one_reshape else _KINDS[self.kind]
        base = an.cg.add(Space(HeadDimsKey(self.tag), self.size, 0, producer=True, title=f"{'+'.join(lins)} {kind}"))
        folds, gate_space = [], None
        for i, chain in enumerate(self.chains):
            p = chain.projection
            reads = self.kind == "v" and chain is self.fold  # the output projection: its columns
            if reads:
                params = [an.param_space(p.weight, 1 - p.out_dim)]
            else:
                params = [an.param_space(t, 0 if t is p.bias else p.out_dim) for t in (p.weight, p.bias)
                          if t is not None]
            # Every tensor on the way has its head-dims space, so that a constant there is cut
            # to the kept dims too; q, k and v split by one reshape share it (one literal D).
            for node, dim in chain.dims.items():
                an.tie(base, _space(an, node, dim, self.size))
            rows = chain.rows.reshape(-1)
            units = np.broadcast_to(np.arange(self.size), chain.rows.shape).reshape(-1)
            mains = [(main, rows, None) for main in params]
            mains += [(an.space(node), covers, node) for node, covers in chain.flat.items()]
            for main, covers, node in mains:
                aux = an.cg.add(Space(RefinedKey(main.key, f"{self.tag}.{i}"), len(covers), main.dim, node=main.node,
                                      param=main.param, producer=main.producer, title=main.title,
                                      refines=main.key, covers=covers))
                an.tie(base, aux, units, None)
                if chain is self.fold and aux.param is not None:
                    folds.append(aux.key)
                if reads and node is self.gate_input:
                    gate_space = aux
        if gate_space is None:
            gate_space = an.cg.spaces[NodeDimsKey(self.gate_input.name)]
        folds_at = self.fold.linear.name if self.kind == "qk" else None
        an.cg.consume(Consumer(self.gate_node.name, self.gate_input.name, gate_space.key, folds, folds_at))


_KINDS = {"qk": "q·k dims", "v": "v dims"}


def _space(an, node: fx.Node, dim: int, size: int) -> Space:
    """The space of `node`'s head dims, next to its channel space (its heads)."""
    key = NodeDimsKey(node.name)
    return an.cg.spaces.get(key) or an.cg.add(Space(key, size, dim, node=node.name))


def add_head_dims(an: Analysis) -> None:
    """Find every attention in `an.gm` and add its q·k and v dims groups to the channel graph."""
    sites = []
    for node in an.gm.graph.nodes:
        if node.name in an.unruled:
            continue
        rule = REGISTRY.lookup(node, an.gm)
        operands = rule.attention(node) if rule is not None else None
        if operands is not None:
            q, k, k_dim, v, loud = operands
            sites += _sites(an, node, (q, k, k_dim), v, loud=loud)
    for site in _exclusive(an, sites):
        site.add(an)


def _role(an: Analysis, node: fx.Node) -> HeadRole | None:
    rule = REGISTRY.lookup(node, an.gm)
    return rule.head_role(node) if rule is not None else None


def _projection(an: Analysis, node: fx.Node) -> Projection | None:
    rule = REGISTRY.lookup(node, an.gm) if node.name not in an.unruled else None
    return rule.projection(node, an) if rule is not None else None


def _sites(an, node: fx.Node, qk: tuple, v, loud: bool) -> list[Site]:
    """The q·k and v sites of attention `node`, those that hold. A batched product may not
    be an attention at all: unless `loud`, a site refused at its first operand says nothing."""
    out = []
    for kind, build in (("qk", lambda: _qk_site(an, node, *qk, loud)), ("v", lambda: _v_site(an, node, v, loud))):
        try:
            out.append(build())
        except Refused as e:
            if e.loud:
                _refuse(an, node, kind, e.reason)
    return out


def _refuse(an, node: fx.Node, kind: str, reason: str) -> None:
    """An unprunable dims group that tells summary() why."""
    space = an.cg.add(Space(HeadDimsKey(f"{node.name}.{kind}"), 1, 0, producer=True,
                            title=f"{describe(node, an.gm)} {_KINDS[kind]}"))
    an.block(space, reason)


def _qk_site(an, node: fx.Node, q, k, k_dim: int, loud: bool) -> Site:
    q_chain = _back(an, q, -1, loud)
    k_chain = _back(an, k, k_dim, True)
    if q_chain.rows.shape[1] != k_chain.rows.shape[1]:
        raise Refused("q and k have different head dims")
    if q_chain.linear is k_chain.linear and np.intersect1d(q_chain.rows, k_chain.rows).size:
        raise Refused("q and k are the same tensor")
    return Site(node, "qk", [q_chain, k_chain], node, q, q_chain)


def _v_site(an, node: fx.Node, v, loud: bool) -> Site:
    v_chain = _back(an, v, -1, loud)
    out_chain = _forward(an, node)
    if out_chain.rows.shape[1] != v_chain.rows.shape[1]:
        raise Refused("the attention output's head dim differs from v's")
    return Site(node, "v", [v_chain, out_chain], out_chain.linear, out_chain.nodes[-1], out_chain)


def _back(an, t, d_dim: int, loud: bool) -> Chain:
    """Walk from attention operand `t` (head dims on `d_dim`) back to the projection that made it."""
    head = an.space(t)
    shape = shape_of(t) if isinstance(t, fx.Node) else None
    if head is None or shape is None or head.dim == normalize_dim(d_dim, len(shape)):
        raise Refused(f"{_name(an, t)} carries no heads lumos_fx follows", loud)
    nodes, node = [], t
    while (projection := _projection(an, node)) is None:
        _check_step(an, node, loud)
        nodes.append(node)
        node = _source(an, node)
        if not isinstance(node, fx.Node):
            raise Refused(f"{describe(nodes[-1], an.gm)} does not read a projection", loud)
    nodes.reverse()
    split = _one_split(an, nodes)
    if split is None:
        raise Refused(f"the heads of {describe(node, an.gm)} are not split by one reshape", loud)
    ids = torch.arange(shape_of(node)[-1], dtype=torch.float64).expand(shape_of(node))
    values = _run(an, nodes, ids)
    rows = _per_head(values[-1], head.dim, normalize_dim(d_dim, values[-1].dim()))
    size = shape_of(nodes[split])[-1]
    dims = _where_dims(an, nodes[split + 1:], nodes[split], size)
    if rows is None or dims is None or rows.shape[1] != size or not np.array_equal(rows % size, np.broadcast_to(np.arange(size), rows.shape)):
        raise Refused(f"the path from {describe(node, an.gm)} to {describe(t, an.gm)} moves the head dims "
                      "in a way lumos_fx does not follow", loud)
    flat = _flat_positions(an, [node] + nodes[:split], [ids] + values[:split], rows.reshape(-1), loud)
    return Chain(node, projection, nodes, rows, dims, flat)


def _forward(an, node: fx.Node) -> Chain:
    """Walk from the attention output to the projection that reads the merged heads."""
    head, shape = an.space(node), shape_of(node)
    if head is None or shape is None or head.dim == len(shape) - 1:
        raise Refused("its output carries no heads lumos_fx follows")
    nodes, current = [], node
    while True:
        # The sizes of other dims may be read (transformers' attn_output.shape[:-1]).
        space = an.space(current)
        heads_at = {space.dim, len(shape_of(current)) - 1} if space is not None else None
        users = [u for u in current.users if not _reads_sizes_only(u, current, heads_at)
                 and not _count_given_back(u, current)]
        if len(users) != 1:
            raise Refused(f"{describe(current, an.gm)} is read by more than the output projection")
        (user,) = users
        if (projection := _projection(an, user)) is not None:
            break
        _check_step(an, user, True)
        if _source(an, user) is not current:
            raise Refused(f"{describe(user, an.gm)} reads the heads other than as its input")
        nodes.append(user)
        current = user
    merged = an.space(current)
    merge = _one_split(an, nodes)
    if merge is None or merged is None \
            or merged.dim != len(shape_of(current)) - 1:
        raise Refused("the heads are not merged by one reshape in front of the output projection")
    h, e = shape[head.dim], shape[-1]
    ids = torch.arange(h * e, dtype=torch.float64).reshape(h, e)
    view = [1] * len(shape)
    view[head.dim], view[-1] = h, e
    values = _run(an, nodes, ids.reshape(view).expand(shape))
    value = values[-1]
    dims = _where_dims(an, nodes[:merge], node, e)
    if dims is None:
        raise Refused("the heads are moved in front of the output projection in a way lumos_fx does not follow")
    flat = value.reshape(-1, value.shape[-1])
    column = flat[0].long().numpy()
    if not torch.equal(flat, flat[:1].expand_as(flat)) or sorted(column.tolist()) != list(range(h * e)):
        raise Refused("the merge of heads in front of the output projection mixes them")
    rows = np.empty(h * e, dtype=np.int64)
    rows[column] = np.arange(h * e)
    flat = _flat_positions(an, nodes[merge:], values[merge:], np.arange(h * e), True)
    return Chain(user, projection, nodes, rows.reshape(h, e), dims, flat)


def _flat_positions(an, nodes: list[fx.Node], values: list, ids: np.ndarray, loud: bool) -> dict[fx.Node, np.ndarray]:
    """For each of `nodes` on the projection's side of the split, with `values` the channel
    ids pushed through to it: the position on its last dim of each of `ids`. Refused unless
    each position holds one id whatever the other dims and the node's channels lie there (a
    ``view(-1, n)`` around transformers' ``Conv1D``, GPT-2's ``split`` of q, k and v)."""
    out = {}
    for node, value in zip(nodes, values):
        if not isinstance(value, torch.Tensor):
            continue  # a split, whose pieces follow
        space, flat = an.space(node), value.reshape(-1, value.shape[-1])
        position = {int(c): p for p, c in enumerate(flat[0].tolist())}
        if space is None or space.dim != value.dim() - 1 or not torch.equal(flat, flat[:1].expand_as(flat)) \
                or len(position) != flat.shape[1] or not all(int(i) in position for i in ids):
            raise Refused(f"{describe(node, an.gm)} holds the heads' channels other than on its last dim", loud)
        out[node] = np.array([position[int(i)] for i in ids], dtype=np.int64)
    return out


def _name(an, t) -> str:
    return describe(t, an.gm) if isinstance(t, fx.Node) else repr(t)


def _source(an: Analysis, node: fx.Node):
    """The tensor a step of a chain passes on."""
    if _role(an, node) is HeadRole.SCALE:
        return next((a for a in node.args[:2] if isinstance(a, fx.Node)), None)
    return node.args[0] if node.args else None


def _check_step(an: Analysis, node: fx.Node, loud: bool) -> None:
    if node.name in an.unruled:
        raise Refused(f"{describe(node, an.gm)} has no rule", loud)
    role = _role(an, node)
    if role is None:
        raise Refused(f"{describe(node, an.gm)} is on the path of the head dims", loud)
    if role is HeadRole.MOVE and any(isinstance(a, fx.Node) for a in list(node.args[1:]) + list(node.kwargs.values())):
        raise Refused(f"{describe(node, an.gm)} takes arguments computed in forward", loud)


def _where_dims(an: Analysis, nodes: list[fx.Node], start: fx.Node, size: int) -> dict[fx.Node, int] | None:
    """The dim that holds the head dims in `start` (its last) and in each of `nodes` after
    it, found by running them on a tensor that varies along that dim only."""
    shape = shape_of(start)
    if size < 2:
        return None  # a head of width 1 has no dim to cut
    tag = torch.arange(size, dtype=torch.float64).expand(shape)
    dims = {start: len(shape) - 1}
    for node, value in zip(nodes, _run(an, nodes, tag)):
        if not isinstance(value, torch.Tensor):
            continue
        varying = [d for d in range(value.dim())
                   if not torch.equal(value, value.narrow(d, 0, 1).expand_as(value))]
        if len(varying) != 1:
            return None
        dims[node] = varying[0]
    return dims


def _run(an: Analysis, nodes: list[fx.Node], value: torch.Tensor) -> list:
    """`value` pushed through a chain's ops (reshapes to their recorded shapes, scalar
    products skipped: only where values go matters here); the value after each op."""
    values = []
    for node in nodes:
        role = _role(an, node)
        if role is HeadRole.SPLIT:
            value = value.reshape(shape_of(node))
        elif role is HeadRole.MOVE:
            value = run_on(node, value)
        values.append(value)
    return values


def _per_head(value: torch.Tensor, h_dim: int, d_dim: int) -> np.ndarray | None:
    """``rows[h, d]`` if `value` holds one channel per (head, dim), the same at every other
    position, and no channel twice; else None."""
    moved = value.movedim((h_dim, d_dim), (-2, -1))
    flat = moved.reshape(-1, *moved.shape[-2:])
    if not torch.equal(flat, flat[:1].expand_as(flat)):
        return None
    rows = flat[0].long().numpy()
    return rows if len(np.unique(rows)) == rows.size else None


def _one_split(an, nodes: list[fx.Node]) -> int | None:
    """The position of the one reshape among `nodes` that splits (or merges) the heads: the
    one that changes the last dim. A reshape to the same shape (transformers'
    ``attn_output.reshape(b, -1, n, d)``) or of the other dims (``view(-1, n)`` around a
    ``Conv1D``) splits nothing; the ops on the projection's side are checked to keep the
    channels on the last dim (:func:`_flat_positions`)."""
    def splits(n):
        source = _source(an, n)
        return _role(an, n) is HeadRole.SPLIT and shape_of(n) is not None and isinstance(source, fx.Node) \
            and shape_of(source) is not None and shape_of(n)[-1] != shape_of(source)[-1]

    found = [i for i, n in enumerate(nodes) if splits(n)]
    return found[0] if len(found) == 1 else None


def _reads_sizes_only(user: fx.Node, node: fx.Node, channel_axes: set[int] | None,
                      dims_of: dict[fx.Node, int] | None = None, d_axis: int | None = None) -> bool:
    """Whether `user` only reads sizes of `node` on dims other than `channel_axes` (the heads'
    and the head dims'), which no cut changes (``q_length = query.shape[2]``), or the head
    dims' size only to give it as the head dims' size of a reshape on the path (`dims_of`:
    where each holds them; transformers' ``reshape(b, -1, n, value.shape[-1])``)."""
    read = axes_read(user, node) if channel_axes is not None else None
    if read is None:
        return False
    if not read & channel_axes:
        return True
    if dims_of is None or read & channel_axes != {d_axis}:
        return False
    readers = [user] if user.op == "call_method" and user.target == "size" else list(user.users)
    for reader in readers:
        for reshape in reader.users:
            if reshape not in dims_of or reshape.op != "call_method" or reshape.target not in ("view", "reshape"):
                return False
            sizes = varargs(reshape.args[1:])
            if [i for i, size in enumerate(sizes) if size is reader] != [dims_of[reshape]]:
                return False
    return True


def _count_given_back(user: fx.Node, node: fx.Node) -> bool:
    """Whether `user` reads `node`'s last-dim size only to give it back as the last size of a
    reshape of `node` (``x.view(-1, x.size(-1))`` around transformers' ``Conv1D``), which the
    reshape rule rewrites to the kept count."""
    shape = shape_of(node)
    if shape is None or axes_read(user, node) != {len(shape) - 1}:
        return False
    readers = [user] if user.op == "call_method" and user.target == "size" else list(user.users)
    return all(reshape.op == "call_method" and reshape.target in ("view", "reshape") and reshape.args[0] is node
               and varargs(reshape.args[1:])[-1:] == [reader]
               for reader in readers for reshape in reader.users)


def _channel_axes(an, chain: Chain, node: fx.Node) -> set[int] | None:
    """The dims of `node` that hold the heads or the head dims (a projection's output and the
    tensors on its side of the split: their last); None where unknown."""
    if node is chain.linear or node in chain.flat:
        return {len(shape_of(node)) - 1}
    space = an.space(node)
    if space is None or node not in chain.dims:
        return None
    return {space.dim, chain.dims[node]}


def _exclusive(an, sites: list[Site]) -> list[Site]:
    """Drop sites whose ops are also read outside the attention (a cut dim would reach that
    reader), repeating until none is dropped: sites that share a split go or stay together."""
    sites = list(sites)
    while True:
        allowed = set().union(*(s.nodes() for s in sites)) | {s.node for s in sites}
        dropped = False
        for site in list(sites):
            dims_of = {n: d for chain in site.chains for n, d in chain.dims.items()}
            for chain in site.chains:
                readers = chain.nodes if chain is site.fold and site.kind == "v" else [chain.linear] + chain.nodes
                outside = next(((n, u) for n in readers for u in n.users if u not in allowed
                                and not (n is chain.nodes[-1] and u is site.gate_node)
                                and not _reads_sizes_only(u, n, _channel_axes(an, chain, n), dims_of,
                                                          chain.dims.get(n))
                                and not (n in chain.flat and _count_given_back(u, n))), None)
                if outside is not None:
                    sites.remove(site)
                    _refuse(an, site.node, site.kind,
                            f"{describe(outside[0], an.gm)} is also read by {describe(outside[1], an.gm)}")
                    dropped = True
                    break
        if not dropped:
            return sites
