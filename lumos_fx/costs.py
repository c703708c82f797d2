r"""Which parameters each gate controls, in the form the complexity term needs.

A parameter tensor with gated dims ``A`` (and ``B``) and ``r`` entries per combination of
them has, with ``p_u = P(z_u \neq 0)`` and ``a[u]`` the number of its indices along ``A``
that belong to unit ``u``, this expected number of alive entries:

.. math::
    E = r\,(a \cdot p_A) \quad\text{or}\quad
    E = r\left[(a \cdot p_A)(b \cdot p_B) - [A = B] \sum_u a_u b_u (p_u^2 - p_u)\right]

The correction applies when both dims belong to the same group: one gate sample decides
both, so an entry on the diagonal survives with ``p_u``, not ``p_u^2``.

A dim gated twice (row ``(h, d)`` of a query projection lives while head ``h`` and dim
``d`` both do) has :math:`p_H^\top M p_D` in place of :math:`a \cdot p_A`, with
:math:`M_{hd}` its rows per (head, dim).

:class:`CostModel` computes each distinct ``a \cdot p`` once, all of them as one product
:math:`A\,p` with :math:`p` every gate's probabilities joined, and sums the terms with two
small matrix products: a handful of tensor ops per training step, whatever the layer count.

Weighted by the FLOPs each entry costs (:func:`parameter_flops`), the same sum is the
expected forward FLOPs of the gated layers: an entry of a linear layer's weight costs two
FLOPs per row of its input, one of a convolution's two per output position, so a conv's
share scales with its output's spatial size, which ShapeProp measured on the example.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import fx

from .plan import Plan


class Linear(NamedTuple):
    """:math:`c \\cdot p_g`: `counts[u]` entries alive while unit `u` of group `group` is."""

    group: int
    counts: np.ndarray


class Bilinear(NamedTuple):
    """:math:`p_g^\\top M p_f` for channels gated twice (a head of group `head` and its dim of group `dim`)."""

    head: int
    dim: int
    matrix: np.ndarray


class Constant(NamedTuple):
    """`count` entries no gate controls."""

    count: float


Piece = Linear | Bilinear | Constant
from .node_info import info


class CostModel:
    """Expected alive prunable parameters as a function of the gates' ``P(z != 0)``; with
    `weights` (canonical parameter name -> cost of one entry, see :func:`parameter_flops`)
    the expected cost of the alive entries, parameters with no weight costing nothing."""

    def __init__(self, plan: Plan, weights: dict[str, float] | None = None) -> None:
        dims: list[tuple[Piece, ...]] = []  # distinct per-dim terms, see _dim_term
        linear: dict[int, float] = {}
        pairs: dict[tuple[int, int], float] = {}
        self.diagonal: list[tuple[int, float, np.ndarray]] = []  # same-gate corrections
        self.dims_of: dict[str, dict[int, int]] = {}  # parameter -> {gated dim: index of its term in widths()}
        self.total = 0
        for name, spaces in plan.param_spaces().items():
            terms = [(s, _dim_term(plan, s)) for s in spaces]
            gated = [(s, t) for s, t in terms if t is not None]
            weight = 1.0 if weights is None else weights.get(name, 0.0)
            if not gated or not weight:
                continue
            numel = int(np.prod(plan.param_shapes[name]))
            rest = weight * (numel // int(np.prod([s.size for s, _ in gated])))
            self.total += weight * numel
            index = []
            for _, term in gated:
                found = next((i for i, known in enumerate(dims) if _same(known, term)), None)
                if found is None:
                    dims.append(term)
                    found = len(dims) - 1
                index.append(found)
            self.dims_of[name] = {s.dim: i for (s, _), i in zip(gated, index)}
            if len(index) == 1:
                linear[index[0]] = linear.get(index[0], 0.0) + rest
            elif len(index) == 2:
                key = tuple(sorted(index))
                pairs[key] = pairs.get(key, 0.0) + rest
                (a, ta), (b, tb) = gated
                if a.group == b.group and len(ta) == len(tb) == 1 and isinstance(ta[0], Linear) \
                        and isinstance(tb[0], Linear):
                    self.diagonal.append((a.group, rest, ta[0].counts * tb[0].counts))
            else:
                raise NotImplementedError(f"parameter {name} is tied on {len(index)} gated dims")
        n = len(dims)
        self.linear = np.zeros(n)
        self.quadratic = np.zeros((n, n))
        for i, rest in linear.items():
            self.linear[i] = rest
        for (i, j), rest in pairs.items():
            self.quadratic[i, j] += rest
        self._join(plan, dims)
        self._on: dict = {}

    def _join(self, plan: Plan, dims: list[tuple[Piece, ...]]) -> None:
        """Lay the terms out over the joined probabilities of every prunable group (in
        group order): :class:`Linear` pieces become rows of ``A``, constants ``const``, the
        same-gate corrections one vector; :class:`Bilinear` pieces stay apart."""
        self.order = [g.id for g in plan.groups if g.prunable]  # as instrument() fills the gate bank
        self.sizes = [plan.groups[g].n_units for g in self.order]
        offset = dict(zip(self.order, np.cumsum([0] + self.sizes)))
        width = sum(self.sizes)
        self.rows = np.zeros((len(dims), width))
        self.const = np.zeros(len(dims))
        self.bilinear: list[tuple[int, int, int, np.ndarray]] = []  # (term, head group, dim group, M)
        for i, term in enumerate(dims):
            for piece in term:
                if isinstance(piece, Linear):
                    start = offset[piece.group]
                    self.rows[i, start:start + len(piece.counts)] += piece.counts
                elif isinstance(piece, Bilinear):
                    self.bilinear.append((i, piece.head, piece.dim, piece.matrix))
                else:
                    self.const[i] += piece.count
        self.same_gate = np.zeros(width)
        for g, rest, c in self.diagonal:
            self.same_gate[offset[g]:offset[g] + len(c)] += rest * c

    def expected(self, probs: dict[int, torch.Tensor]) -> torch.Tensor:
        """Expected alive entries for ``probs[group id] = P(z != 0)`` per unit."""
        return self.joined(torch.cat([probs[g] for g in self.order]))

    def joined(self, p: torch.Tensor) -> torch.Tensor:
        """:meth:`expected` for every prunable group's probabilities joined in group order
        (as :meth:`lumos_fx.gate.GateBank.prob_joined` gives them). A bilinear term's
        :math:`p_g^\top M p_f` sums its nonzero entries: one gather and one ``index_add``
        for all of them, whatever the number of attention layers."""
        if not len(self.linear):
            return p.sum() * 0
        t = self._tensors(p)
        dots = self.widths(p)
        return t.linear @ dots + dots @ (t.quadratic @ dots) - t.same_gate @ (p * (p - 1))

    def widths(self, p: torch.Tensor) -> torch.Tensor:
        """The expected kept size of every distinct gated dim, :math:`d = A p + c`, plus
        :math:`p_g^\top M p_f` for a dim gated twice; :attr:`dims_of` names each parameter's."""
        t = self._tensors(p)
        dots = torch.addmv(t.const, t.rows, p)
        if len(t.term):
            dots = dots.index_add(0, t.term, t.weight * p[t.head] * p[t.dim])
        return dots

    def _tensors(self, like: torch.Tensor) -> _Terms:
        key = (like.device, like.dtype)
        if key not in self._on:
            as_t = lambda a: torch.as_tensor(a, dtype=like.dtype, device=like.device)  # noqa: E731
            index = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=like.device)  # noqa: E731
            offset = dict(zip(self.order, np.cumsum([0] + self.sizes)))
            term, head, dim, weight = [], [], [], []  # one entry per nonzero M[h, d] of every bilinear term
            for i, g, f, m in self.bilinear:
                h, d = np.nonzero(m)
                term += [i] * len(h)
                head += list(offset[g] + h)
                dim += list(offset[f] + d)
                weight += list(m[h, d])
            self._on[key] = _Terms(as_t(self.rows), as_t(self.const), as_t(self.linear), as_t(self.quadratic),
                                   as_t(self.same_gate), index(term), index(head), index(dim), as_t(weight))
        return self._on[key]


class _Terms(NamedTuple):
    """A :class:`CostModel`'s arrays as tensors on one device; the bilinear terms as their
    nonzero entries: ``weight[k] = M[h, d]`` of term ``term[k]``, at ``head[k]`` and
    ``dim[k]`` of the joined probabilities."""

    rows: torch.Tensor
    const: torch.Tensor
    linear: torch.Tensor
    quadratic: torch.Tensor
    same_gate: torch.Tensor
    term: torch.Tensor
    head: torch.Tensor
    dim: torch.Tensor
    weight: torch.Tensor


def parameter_flops(gm: fx.GraphModule, plan: Plan) -> dict[str, float]:
    """Forward FLOPs per entry of each weight (a parameter of two or more dims) on the
    example inputs: the FLOPs of the module calls that hold it (``its record's ``flops````,
    from :func:`lumos_fx.trace.trace`) over its entry count. A module holding several
    weights (a graph attention layer's projection and attention vectors) shares its FLOPs
    among them by size. FLOPs between activations (attention scores, message passing)
    belong to no weight and are not counted."""
    canonical = plan.canonical_names()
    flops: dict[str, float] = {}
    for node in gm.graph.nodes:
        cost = info(node).flops
        if node.op != "call_module" or not cost:
            continue
        weights = {canonical[f"{node.target}.{n}"]: p.numel()
                   for n, p in gm.get_submodule(node.target).named_parameters() if p.dim() >= 2}
        for w, size in weights.items():
            flops[w] = flops.get(w, 0.0) + cost * size / sum(weights.values())
    return {w: f / float(np.prod(plan.param_shapes[w])) for w, f in flops.items()}


def _dim_term(plan: Plan, space) -> tuple[Piece, ...] | None:
    """The expected alive count along one dim of a parameter, as a sum of pieces; None
    when nothing gates the dim."""
    prunable = plan.group_of(space).prunable
    fine = [f for f in plan.refinements(space.key) if plan.group_of(f).prunable]
    if not fine:
        if not prunable:
            return None
        return (Linear(space.group, _counts(space.units, plan.groups[space.group].n_units)),)
    covered = np.zeros(space.size, bool)
    pieces = []
    for f in fine:
        covered[f.covers] = True
        n_fine = plan.groups[f.group].n_units
        if prunable:
            matrix = np.zeros((plan.groups[space.group].n_units, n_fine))
            np.add.at(matrix, (space.units[f.covers], f.units), 1.0)
            pieces.append(Bilinear(space.group, f.group, matrix))
        else:
            pieces.append(Linear(f.group, _counts(f.units, n_fine)))
    rest = ~covered
    if prunable:
        pieces.append(Linear(space.group, _counts(space.units[rest], plan.groups[space.group].n_units)))
    else:
        pieces.append(Constant(float(rest.sum())))
    return tuple(pieces)


def _counts(units: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(units, minlength=n).astype(np.float64)


def _same(a: tuple[Piece, ...], b: tuple[Piece, ...]) -> bool:
    return len(a) == len(b) and all(type(x) is type(y) and all(
        np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v for u, v in zip(x, y)) for x, y in zip(a, b))
