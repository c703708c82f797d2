r"""The Optical workload's data: laser beam profiles with and without optics damage, and the
undamaged profile the encoder-decoder must reconstruct (damage shows as the residual).

A beam is a Hermite-Gaussian mode :math:`\mathrm{TEM}_{mn}` (:math:`m, n \le 2`) of random
waist :math:`w`, ellipticity and centre,

.. math::
    I(x, y) = \left| H_m\!\left(\tfrac{\sqrt2 x}{w_x}\right) H_n\!\left(\tfrac{\sqrt2 y}{w_y}\right)
    e^{-x^2 / w_x^2 - y^2 / w_y^2} \right|^2,

normalised to a peak of 1. Half of the profiles pass a damaged optic: each damage site is an
opaque pit whose shadow, diffracted on the way to the camera, is an Airy-like pattern
:math:`1 - a\,[2 J_1(u) / u]^2`-shaped dip with rings (approximated by
:math:`\mathrm{sinc}^2`). Camera noise is added to every profile.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial.hermite import hermval

from ..cache import cached


def beam(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = (np.mgrid[:size, :size] - size / 2 + 0.5) / size
    cx, cy = rng.normal(0, 0.05, 2)
    w = rng.uniform(0.18, 0.3) * np.array([1.0, rng.uniform(0.7, 1.0)])
    m, n = rng.integers(0, 3, 2)
    x, y = (xx - cx) / w[0], (yy - cy) / w[1]
    field = hermval(np.sqrt(2) * x, np.eye(3)[m]) * hermval(np.sqrt(2) * y, np.eye(3)[n]) * np.exp(-x ** 2 - y ** 2)
    intensity = field ** 2
    return intensity / intensity.max()


def damage(rng: np.random.Generator, size: int) -> np.ndarray:
    """Transmission of 1 to 4 damage sites' diffracted shadows."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    t = np.ones((size, size))
    for _ in range(rng.integers(1, 5)):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        r = np.hypot(xx - cx, yy - cy) / rng.uniform(0.8, 2.0)
        t *= 1 - rng.uniform(0.5, 0.95) * np.sinc(r / np.pi) ** 2
    return t


def simulate(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` camera images (n, 1, size, size) and the undamaged beams (n, 1, size, size)."""
    rng = np.random.default_rng(seed)
    clean = np.stack([beam(rng, size) for _ in range(n)])
    damaged = rng.random(n) < 0.5
    observed = np.stack([c * damage(rng, size) if d else c for c, d in zip(clean, damaged)])
    observed = observed + rng.normal(0, 0.02, observed.shape)
    return observed[:, None].astype(np.float32), clean[:, None].astype(np.float32)


def load(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"optical_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
