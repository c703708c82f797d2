r"""The STEM-DL workload's data: electron diffraction patterns of 2D crystals, classified by
the crystal's Bravais lattice.

A lattice with real-space basis :math:`A = (a_1, a_2)` diffracts at the reciprocal lattice
points :math:`g = h b_1 + k b_2`, :math:`B = 2\pi A^{-\top}`, with kinematic spot intensities
damped by a Debye-Waller factor, :math:`I_g \propto e^{-B_{DW} |g|^2}`. Each pattern has a
random lattice constant, cell shape within its class and in-plane rotation, Gaussian spots
of the probe's size, a diffuse background and counting noise; the class is only visible in
the spots' geometry (angles, ratios of spacings), as in real STEM diffraction.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached

CLASSES = ["oblique", "rectangular", "centred_rectangular", "square", "hexagonal"]


def basis(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Primitive basis vectors (rows) of a lattice of `kind`, lattice constant 1."""
    if kind == "square":
        return np.array([[1.0, 0.0], [0.0, 1.0]])
    if kind == "hexagonal":
        return np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    if kind == "rectangular":
        return np.array([[1.0, 0.0], [0.0, rng.uniform(1.3, 1.8)]])
    if kind == "centred_rectangular":  # b/a away from sqrt(3), where it would be hexagonal
        b = rng.choice([rng.uniform(1.15, 1.5), rng.uniform(2.0, 2.5)])
        return np.array([[1.0, 0.0], [0.5, b / 2]])
    gamma = np.radians(rng.choice([rng.uniform(70, 82), rng.uniform(98, 110)]))
    b = rng.uniform(1.15, 1.5)
    return np.array([[1.0, 0.0], [b * np.cos(gamma), b * np.sin(gamma)]])


def pattern(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    spacing = rng.uniform(0.16, 0.24) * size  # pixels between the first spots
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    recip = 2 * np.pi * np.linalg.inv(basis(kind, rng)).T @ rot.T / (2 * np.pi) * spacing
    hk = np.stack(np.meshgrid(np.arange(-8, 9), np.arange(-8, 9)), -1).reshape(-1, 2)
    g = hk @ recip
    g = g[np.linalg.norm(g, axis=1) < 0.7 * size]
    yy, xx = np.mgrid[:size, :size] - size / 2
    debye_waller = rng.uniform(0.5, 1.5) / size ** 2
    width = rng.uniform(0.6, 1.0)
    spots = np.exp(-debye_waller * (g ** 2).sum(1) * 4)[:, None, None] * np.exp(
        -((xx - g[:, 0, None, None]) ** 2 + (yy - g[:, 1, None, None]) ** 2) / (2 * width ** 2))
    image = spots.sum(0) + 0.05 * np.exp(-(xx ** 2 + yy ** 2) / (0.1 * size ** 2))
    dose = rng.uniform(50, 200)
    return np.log1p(rng.poisson(image * dose) / dose * 10)


def simulate(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` patterns (n, 1, size, size) and their lattice class (n,) in CLASSES."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    images = np.stack([pattern(rng, CLASSES[c], size) for c in labels])
    return images[:, None].astype(np.float32), labels.astype(np.int64)


def load(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"stemdl_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
