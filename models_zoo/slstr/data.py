r"""The SLSTR workload's data: multi-band satellite scenes and their per-pixel cloud masks,
after the Sentinel-3 SLSTR radiometer (visible, near-infrared and short-wave reflectances,
thermal-infrared brightness temperatures).

The surface is sea or land (a thresholded fractal field); land reflects more in the near
infrared, sea is dark; the surface temperature varies smoothly around 285-300 K. Clouds are
a second fractal field of optical thickness :math:`\tau \ge 0`; a pixel's cloud cover is
:math:`c = 1 - e^{-\tau}` and each band mixes

.. math::
    R_b = (1 - c) R^{surface}_b + c\, R^{cloud}_b, \qquad
    T_b = (1 - c) T_{surface} + c\, T_{top},

with bright, spectrally flat cloud reflectance (lower at 1.6 um, where ice absorbs) and a
cold cloud top. The label is cloud where :math:`\tau > 1`. Sensor noise on every band;
one further band is a detector's dark-current channel and carries no scene information.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached
from ..fields import smooth_field

BANDS = ["S1_555nm", "S2_659nm", "S3_865nm", "S5_1610nm", "S8_10.8um", "S9_12um", "dark_current"]
UNINFORMATIVE = ["dark_current"]
SEA = np.array([0.05, 0.03, 0.02, 0.01])
LAND = np.array([0.08, 0.10, 0.30, 0.25])
CLOUD = np.array([0.75, 0.73, 0.70, 0.45])


def simulate(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` scenes (n, 7, size, size), standardised per band, and cloud masks (n, size, size)."""
    rng = np.random.default_rng(seed)
    land = smooth_field(rng, n, size, 3.5) > rng.uniform(-0.5, 1.0, (n, 1, 1))
    surface = np.where(land[:, None], LAND[None, :, None, None], SEA[None, :, None, None])
    surface = surface * (1 + 0.15 * smooth_field(rng, n, size, 2.0)[:, None])
    t_surface = rng.uniform(285, 300, (n, 1, 1)) + 3 * smooth_field(rng, n, size, 3.0) + 4 * land
    tau = np.exp(1.5 * smooth_field(rng, n, size, 3.0) + rng.uniform(-2.0, 1.0, (n, 1, 1)))
    tau = np.where(tau > 0.05, tau, 0.0)
    cover = 1 - np.exp(-tau)
    t_top = rng.uniform(225, 265, (n, 1, 1))
    reflect = (1 - cover[:, None]) * surface + cover[:, None] * CLOUD[None, :, None, None]
    thermal = (1 - cover) * t_surface + cover * t_top
    bands = np.concatenate([reflect + rng.normal(0, 0.02, reflect.shape),
                            (thermal + rng.normal(0, 0.5, thermal.shape))[:, None],
                            (thermal - 1.5 * cover + rng.normal(0, 0.5, thermal.shape))[:, None],
                            rng.normal(0, 1, (n, 1, size, size))], axis=1)
    bands = (bands - bands.mean((0, 2, 3), keepdims=True)) / bands.std((0, 2, 3), keepdims=True)
    return bands.astype(np.float32), (tau > 1.0).astype(np.int64)


def load(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"slstr_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
