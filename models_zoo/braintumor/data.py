r"""The BrainTumor workload's data: MRI-like axial slices with and without a lesion.

A slice is a head phantom: an elliptical skull (bright fat), a thin dark CSF layer, brain
tissue whose grey/white matter texture is a smooth random field, and two dark ventricles.
A lesion (half of the slices) is a bright enhancing rim around a dark necrotic core inside
a faint oedema halo, at a random place in the brain. A smooth multiplicative bias field
models coil inhomogeneity; magnitude images have Rician noise,
:math:`|s + n_1 + i n_2|` with :math:`n_{1,2} \sim N(0, \sigma^2)`.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached
from ..fields import smooth_field

CLASSES = ["healthy", "lesion"]


def simulate(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` slices (n, 1, size, size) and labels (n,) in CLASSES."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[:size, :size] - size / 2 + 0.5) / (size / 2)
    labels = rng.integers(0, 2, n)
    texture = smooth_field(rng, n, size, 2.5)
    bias = 1 + 0.15 * smooth_field(rng, n, size, 4.0)
    images = np.empty((n, size, size))
    for i in range(n):
        a, b = rng.uniform(0.75, 0.9), rng.uniform(0.85, 0.98)
        rad = np.sqrt((xx / a) ** 2 + (yy / b) ** 2)
        img = np.where(rad < 1, 0.9, 0.0) * (rad > 0.88)
        img += np.where(rad < 0.84, 0.55 + 0.08 * texture[i], 0.0)
        for side in (-1, 1):
            img = np.where(((xx - side * 0.12) / 0.08) ** 2 + (yy / 0.25) ** 2 < 1, 0.15, img)
        if labels[i]:
            r = rng.uniform(0.0, 0.55)
            phi = rng.uniform(0, 2 * np.pi)
            cx, cy = r * np.cos(phi) * a, r * np.sin(phi) * b
            size_l = rng.uniform(0.08, 0.2)
            d = np.hypot(xx - cx, yy - cy) / size_l
            img = np.where(d < 2.0, img + 0.08, img)
            img = np.where(d < 1.0, 0.95, img)
            img = np.where(d < 0.6, 0.25, img)
        images[i] = img * bias[i]
    sigma = rng.uniform(0.03, 0.08, (n, 1, 1))
    noisy = np.hypot(images + rng.normal(0, 1, images.shape) * sigma, rng.normal(0, 1, images.shape) * sigma)
    return noisy[:, None].astype(np.float32), labels.astype(np.int64)


def load(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"braintumor_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
