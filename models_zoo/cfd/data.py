"""The CFD surrogate's data set: HLL face fluxes of random cell pairs, plus columns that
carry no information (the ground truth of feature selection)."""

from __future__ import annotations

import numpy as np

from ..cache import cached
from .flux import conserved, hll_flux

STATE = ["rho", "mx", "my", "E"]
INFORMATIVE = [f"{v}_L" for v in STATE] + [f"{v}_R" for v in STATE] + ["nx", "ny"]
UNINFORMATIVE = ["noise_1", "noise_2", "noise_3", "constant"]
DUPLICATE = "rho_L_copy"  # an exact copy of rho_L: redundant, keeping either one is right
FEATURES = INFORMATIVE + UNINFORMATIVE + [DUPLICATE]
TARGETS = ["flux_rho", "flux_mx", "flux_my", "flux_E"]


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` faces: inputs (n, 15) in the order of FEATURES, targets (n, 4) HLL fluxes.

    Left cells are gas states of a subsonic-to-supersonic flow; the right cell is the left
    one perturbed (as a neighbouring cell is), by a shock-sized jump in 30% of the faces,
    so all three branches of the solver (left, star, right state) occur.
    """
    rng = np.random.default_rng(seed)
    rho = rng.uniform(0.5, 2.0, n)
    u, v = rng.uniform(-1.2, 1.2, (2, n))
    p = rng.uniform(0.4, 2.5, n)
    jump = np.where(rng.uniform(size=n) < 0.3, 0.5, 0.1)
    step = jump[:, None] * rng.standard_normal((n, 4))
    left = conserved(rho, u, v, p)
    right = conserved(rho * np.exp(step[:, 0]), u + step[:, 1], v + step[:, 2], p * np.exp(step[:, 3]))
    theta = rng.uniform(0, 2 * np.pi, n)
    normal = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    flux = hll_flux(left, right, normal)
    noise = rng.standard_normal((n, 3))
    constant = np.ones((n, 1))
    x = np.concatenate([left, right, normal, noise, constant, left[:, :1]], axis=1)
    return x.astype(np.float32), flux.astype(np.float32)


def load(n: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The data set, generated once and cached on disk."""
    return cached(f"cfd_n{n}_s{seed}", lambda: simulate(n, seed))
