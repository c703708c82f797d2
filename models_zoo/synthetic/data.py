r"""The Synthetic workload's data: Friedman's regression function #1 (Friedman, 1991),

.. math::
    y = 10 \sin(\pi x_1 x_2) + 20 (x_3 - \tfrac12)^2 + 10 x_4 + 5 x_5 + \varepsilon,
    \qquad x \sim U[0, 1]^{10}, \quad \varepsilon \sim N(0, 1),

an interaction, a curvature and two linear terms; :math:`x_6 \dots x_{10}` are drawn like the
others and never used, the ground truth of feature selection.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached

INFORMATIVE = [f"x{i}" for i in range(1, 6)]
UNINFORMATIVE = [f"x{i}" for i in range(6, 11)]
FEATURES = INFORMATIVE + UNINFORMATIVE
TARGETS = ["y"]


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` samples: inputs (n, 10) in the order of FEATURES, target (n, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, len(FEATURES)))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
         + rng.standard_normal(n))
    return x.astype(np.float32), y[:, None].astype(np.float32)


def load(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The data set, generated once and cached on disk."""
    return cached(f"synthetic_n{n}_s{seed}", lambda: simulate(n, seed))
