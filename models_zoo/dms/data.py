r"""The DMS workload's data: diffuse scattering patterns of binary alloys classified by their
short-range order.

An A/B alloy on a square lattice is the Ising model :math:`E = -J \sum_{\langle ij \rangle}
s_i s_j` (spins :math:`s = \pm 1` for A/B) equilibrated by checkerboard Metropolis sweeps
above the ordering temperature (:math:`T_c = 2.269 |J|`). :math:`J > 0` makes like atoms
cluster, :math:`J < 0` makes them alternate, :math:`J = 0` is a random alloy. The diffuse
intensity is the structure factor

.. math::
    I(q) = \frac{1}{N} \Big| \sum_r (s_r - \bar s) e^{-i q \cdot r} \Big|^2,

peaked at :math:`q = 0` for clustering and at the superlattice point :math:`(\pi, \pi)` for
ordering, flat for a random alloy; the image is :math:`\log(1 + I)` with counting noise.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached

CLASSES = ["random", "clustering", "ordering"]
COUPLING = np.array([0.0, 1.0, -1.0])


def metropolis(spins: np.ndarray, coupling: np.ndarray, temperature: np.ndarray, sweeps: int,
               rng: np.random.Generator) -> np.ndarray:
    """Checkerboard Metropolis sweeps of a batch of periodic lattices (n, L, L), one coupling
    and temperature per lattice."""
    size = spins.shape[-1]
    parity = np.add.outer(np.arange(size), np.arange(size)) % 2
    beta_j = (coupling / temperature)[:, None, None]
    for _ in range(sweeps):
        for colour in (0, 1):
            field = (np.roll(spins, 1, 1) + np.roll(spins, -1, 1) + np.roll(spins, 1, 2) + np.roll(spins, -1, 2))
            accept = rng.random(spins.shape) < np.exp(np.minimum(0.0, -2.0 * beta_j * spins * field))
            spins = np.where(accept & (parity == colour), -spins, spins)
    return spins


def simulate(n: int, size: int, seed: int, sweeps: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """`n` patterns (n, 1, size, size) and their class (n,) in CLASSES."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    temperature = rng.uniform(2.6, 5.0, n)
    spins = np.where(rng.random((n, size, size)) < 0.5, 1.0, -1.0)
    spins = metropolis(spins, COUPLING[labels], temperature, sweeps, rng)
    s = spins - spins.mean((1, 2), keepdims=True)
    intensity = np.abs(np.fft.fftshift(np.fft.fft2(s), axes=(1, 2))) ** 2 / size ** 2
    dose = rng.uniform(5.0, 20.0, (n, 1, 1))
    counts = rng.poisson(intensity * dose) / dose
    return np.log1p(counts)[:, None].astype(np.float32), labels.astype(np.int64)


def load(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"dms_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
