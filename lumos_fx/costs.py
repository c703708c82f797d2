r"""Which parameters each gate controls, in the form the complexity term needs.

A parameter tensor with gated dims ``A`` (and ``B``) and ``r`` entries per combination of
them has, with ``p_u = P(z_u \neq 0)`` and ``a[u]`` the number of its indices along ``A``
that belong to unit ``u``, this expected number of alive entries:

.. math::
    E = r\,(a \cdot p_A) \quad\text{or}\quad
    E = r\left[(a \cdot p_A)(b \cdot p_B) - [A = B] \sum_u a_u b_u (p_u^2 - p_u)\right]

The correction applies when both dims belong to the same group: one gate sample decides
both, so an entry on the diagonal survives with ``p_u``, not ``p_u^2``.

:class:`CostModel` computes each distinct ``a \cdot p`` once and sums the terms with two
small matrix products, so the cost per training step does not grow with the layer count.
"""

from __future__ import annotations

import numpy as np
import torch

from .analyze import Plan


class CostModel:
    """Expected alive prunable parameters as a function of the gates' ``P(z != 0)``."""

    def __init__(self, plan: Plan) -> None:
        dims: list[tuple[int, np.ndarray]] = []  # distinct (group id, counts per unit)
        linear: dict[int, float] = {}
        pairs: dict[tuple[int, int], float] = {}
        self.diagonal: list[tuple[int, float, np.ndarray]] = []  # same-gate corrections
        self.total = 0
        for name, spaces in plan.param_spaces().items():
            gated = [s for s in spaces if plan.group_of(s).prunable]
            if not gated:
                continue
            numel = int(np.prod(plan.param_shapes[name]))
            rest = numel // int(np.prod([s.size for s in gated]))
            self.total += numel
            index = []
            for s in gated:
                counts = np.bincount(s.units, minlength=plan.groups[s.group].n_units).astype(np.float64)
                found = next((i for i, (g, c) in enumerate(dims) if g == s.group and np.array_equal(c, counts)), None)
                if found is None:
                    dims.append((s.group, counts))
                    found = len(dims) - 1
                index.append(found)
            if len(index) == 1:
                linear[index[0]] = linear.get(index[0], 0.0) + rest
            elif len(index) == 2:
                key = tuple(sorted(index))
                pairs[key] = pairs.get(key, 0.0) + rest
                if gated[0].group == gated[1].group:
                    self.diagonal.append((gated[0].group, rest, dims[index[0]][1] * dims[index[1]][1]))
            else:
                raise NotImplementedError(f"parameter {name} is tied on {len(index)} gated dims")
        self.dims = dims
        n = len(dims)
        self.linear = np.zeros(n)
        self.quadratic = np.zeros((n, n))
        for i, rest in linear.items():
            self.linear[i] = rest
        for (i, j), rest in pairs.items():
            self.quadratic[i, j] += rest
        self._on: dict = {}

    def _tensors(self, like: torch.Tensor):
        key = (like.device, like.dtype)
        if key not in self._on:
            as_t = lambda a: torch.as_tensor(a, dtype=like.dtype, device=like.device)  # noqa: E731
            self._on[key] = ([(g, as_t(c), bool(np.all(c == 1))) for g, c in self.dims], as_t(self.linear),
                             as_t(self.quadratic), [(g, r, as_t(c)) for g, r, c in self.diagonal])
        return self._on[key]

    def expected(self, probs: dict[int, torch.Tensor]) -> torch.Tensor:
        """Expected alive entries for ``probs[group id] = P(z != 0)`` per unit."""
        like = next(iter(probs.values()))
        dims, linear, quadratic, diagonal = self._tensors(like)
        if not dims:
            return like.sum() * 0
        dots = torch.stack([probs[g].sum() if ones else c @ probs[g] for g, c, ones in dims])
        value = linear @ dots + dots @ quadratic @ dots
        for g, rest, c in diagonal:
            value = value - rest * (c @ (probs[g] * probs[g] - probs[g]))
        return value
