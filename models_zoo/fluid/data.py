r"""The Fluid workload's data: the force one SPH particle exerts on a neighbour, with the
kernels of Müller et al. (2003) for a weakly compressible, isothermal fluid.

For particles :math:`i, j` at distance :math:`r = |r_{ij}| < h`, :math:`r_{ij} = x_i - x_j`,
masses :math:`m`, densities :math:`\rho` and the equation of state
:math:`p = k (\rho - \rho_0)`:

.. math::
    f^{p}_{ij} = -m \frac{p_i + p_j}{2 \rho_j} \nabla W_{spiky}(r_{ij}),
    \qquad \nabla W_{spiky}(r) = -\frac{45}{\pi h^6} (h - r)^2 \frac{r_{ij}}{r},

.. math::
    f^{v}_{ij} = \mu\, m \frac{v_j - v_i}{\rho_j} \nabla^2 W_{visc}(r),
    \qquad \nabla^2 W_{visc}(r) = \frac{45}{\pi h^6} (h - r).

Inputs: the offset and relative velocity of the pair and both densities (8 informative); the
particles' temperatures (the fluid is isothermal: unused), two noise columns and a constant.
Targets: the three components of :math:`f^p + f^v`.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached

H, MASS, K, RHO0, MU = 0.1, 0.02, 3.0, 1000.0, 3.5
INFORMATIVE = ["dx", "dy", "dz", "dvx", "dvy", "dvz", "rho_i", "rho_j"]
UNINFORMATIVE = ["temp_i", "temp_j", "noise_1", "noise_2", "constant"]
FEATURES = INFORMATIVE + UNINFORMATIVE
TARGETS = ["fx", "fy", "fz"]


def pair_force(offset: np.ndarray, dv: np.ndarray, rho_i: np.ndarray, rho_j: np.ndarray) -> np.ndarray:
    """Pressure plus viscosity force on particle i from j; `dv` = v_i - v_j."""
    r = np.linalg.norm(offset, axis=-1, keepdims=True)
    c = 45.0 / (np.pi * H ** 6)
    grad = -c * (H - r) ** 2 * offset / r
    p_i, p_j = K * (rho_i - RHO0), K * (rho_j - RHO0)
    pressure = -MASS * ((p_i + p_j) / (2 * rho_j))[:, None] * grad
    viscosity = MU * MASS * (-dv) / rho_j[:, None] * c * (H - r)
    return pressure + viscosity


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` neighbour pairs (0.05 h < r < h, isotropic), densities within 3% of rest."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    offset = direction * rng.uniform(0.05 * H, H, (n, 1))
    dv = rng.normal(0.0, 0.5, (n, 3))
    rho_i, rho_j = RHO0 * (1 + rng.uniform(-0.03, 0.03, (2, n)))
    force = pair_force(offset, dv, rho_i, rho_j)
    temps = rng.uniform(280.0, 320.0, (n, 2))
    x = np.concatenate([offset, dv, rho_i[:, None], rho_j[:, None], temps, rng.standard_normal((n, 2)),
                        np.ones((n, 1))], axis=1)
    return x.astype(np.float32), force.astype(np.float32)


def load(n: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The data set, generated once and cached on disk."""
    return cached(f"fluid_n{n}_s{seed}", lambda: simulate(n, seed))
