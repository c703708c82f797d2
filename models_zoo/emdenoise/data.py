r"""The EM-Denoise workload's data: low-dose electron micrographs and their noise-free images.

The specimen is a projected density of particles (ellipsoidal Gaussian blobs of random size,
orientation and contrast) and filaments (line segments), seen through a Gaussian point
spread function. A micrograph counts electrons: with dose :math:`d` per pixel,

.. math::
    \text{noisy} = \frac{\mathrm{Poisson}(d\,(b + \rho))}{d} - b, \qquad \text{clean} = \rho,

with background :math:`b`; the network maps noisy to clean (MSE, as the paper's EM-Denoise).
"""

from __future__ import annotations

import numpy as np

from ..cache import cached


def specimen(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(float)
    image = np.zeros((size, size))
    for _ in range(rng.integers(2, 7)):
        cy, cx = rng.uniform(0, size, 2)
        sa, sb = rng.uniform(0.04, 0.12, 2) * size
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        image += rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2))
    for _ in range(rng.integers(0, 3)):
        p, q = rng.uniform(0, size, (2, 2))
        s = np.clip(((xx - p[0]) * (q[0] - p[0]) + (yy - p[1]) * (q[1] - p[1])) / ((q - p) ** 2).sum(), 0, 1)
        dist2 = (xx - p[0] - s * (q[0] - p[0])) ** 2 + (yy - p[1] - s * (q[1] - p[1])) ** 2
        image += rng.uniform(0.4, 0.8) * np.exp(-dist2 / (2 * rng.uniform(0.6, 1.2) ** 2))
    return image


def simulate(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` pairs: noisy micrographs (n, 1, size, size) and clean images (n, 1, size, size)."""
    rng = np.random.default_rng(seed)
    clean = np.stack([specimen(rng, size) for _ in range(n)])
    background = 0.5
    dose = rng.uniform(4.0, 12.0, (n, 1, 1))
    noisy = rng.poisson(dose * (background + clean)) / dose - background
    return noisy[:, None].astype(np.float32), clean[:, None].astype(np.float32)


def load(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"emdenoise_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
