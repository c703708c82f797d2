r"""The PureMD workload's data: the bonded force on the end atom :math:`i` of an angle
:math:`i - j - k` under a harmonic bond and a harmonic angle term (the bonded part of a
classical force field such as PureMD's),

.. math::
    E = k_b (|r_{ij}| - r_0)^2 + k_\theta (\theta - \theta_0)^2, \qquad
    \cos\theta = \frac{r_{ij} \cdot r_{kj}}{|r_{ij}| |r_{kj}|}, \quad r_{ij} = x_i - x_j,

.. math::
    F_i = -\frac{\partial E}{\partial x_i}
        = -2 k_b (|r_{ij}| - r_0) \frac{r_{ij}}{|r_{ij}|}
          + \frac{2 k_\theta (\theta - \theta_0)}{\sin\theta}
            \left(\frac{r_{kj}}{|r_{ij}| |r_{kj}|} - \cos\theta \frac{r_{ij}}{|r_{ij}|^2}\right).

Inputs: both bond vectors and the four force-field constants (10 informative); the partial
charges of i and k and the mass of j (bonded forces do not use them), a noise column and a
constant. Targets: the three components of :math:`F_i`.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached

INFORMATIVE = ["rij_x", "rij_y", "rij_z", "rkj_x", "rkj_y", "rkj_z", "k_bond", "r0", "k_angle", "theta0"]
UNINFORMATIVE = ["charge_i", "charge_k", "mass_j", "noise", "constant"]
FEATURES = INFORMATIVE + UNINFORMATIVE
TARGETS = ["fx", "fy", "fz"]


def bonded_force(rij: np.ndarray, rkj: np.ndarray, k_bond, r0, k_angle, theta0) -> np.ndarray:
    """Force on atom i (rows of `rij`, `rkj` are the two bond vectors)."""
    dij = np.linalg.norm(rij, axis=-1, keepdims=True)
    dkj = np.linalg.norm(rkj, axis=-1, keepdims=True)
    cos = np.clip((rij * rkj).sum(-1, keepdims=True) / (dij * dkj), -1.0, 1.0)
    theta = np.arccos(cos)
    bond = -2 * k_bond[:, None] * (dij - r0[:, None]) * rij / dij
    angle = (2 * k_angle[:, None] * (theta - theta0[:, None]) / np.sin(theta)
             * (rkj / (dij * dkj) - cos * rij / dij ** 2))
    return bond + angle


def _random_directions(rng, n: int) -> np.ndarray:
    d = rng.standard_normal((n, 3))
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` angle configurations near equilibrium: bond lengths within 10% of r0, angles within
    20 degrees of theta0, random orientation; constants spanning C-C to C-H-like bonds."""
    rng = np.random.default_rng(seed)
    k_bond, r0 = rng.uniform(200, 500, n), rng.uniform(1.0, 1.5, n)
    k_angle, theta0 = rng.uniform(30, 80, n), np.radians(rng.uniform(100, 120, n))
    u = _random_directions(rng, n)
    # a unit vector perpendicular to u, then the second bond at angle theta to the first
    w = _random_directions(rng, n)
    w -= (w * u).sum(-1, keepdims=True) * u
    w /= np.linalg.norm(w, axis=-1, keepdims=True)
    theta = theta0 + np.radians(rng.uniform(-20, 20, n))
    rij = u * (r0 * rng.uniform(0.9, 1.1, n))[:, None]
    rkj = (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * w) * (r0 * rng.uniform(0.9, 1.1, n))[:, None]
    force = bonded_force(rij, rkj, k_bond, r0, k_angle, theta0)
    extra = np.stack([rng.uniform(-0.8, 0.8, n), rng.uniform(-0.8, 0.8, n), rng.choice([1.008, 12.011, 15.999], n),
                      rng.standard_normal(n), np.ones(n)], axis=1)
    x = np.concatenate([rij, rkj, np.stack([k_bond, r0, k_angle, theta0], 1), extra], axis=1)
    return x.astype(np.float32), force.astype(np.float32)


def load(n: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The data set, generated once and cached on disk."""
    return cached(f"puremd_n{n}_s{seed}", lambda: simulate(n, seed))
