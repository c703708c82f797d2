"""Gaussian random fields by spectral synthesis, shared by the simulators of the image and
volume workloads."""

from __future__ import annotations

import numpy as np


def wavenumbers(size: int, ndim: int) -> np.ndarray:
    """|k| in grid units (cycles per box) on the grid of ``np.fft.rfftn`` of a ``size^ndim`` box."""
    axes = [np.fft.fftfreq(size) * size] * (ndim - 1) + [np.fft.rfftfreq(size) * size]
    return np.sqrt(sum(k ** 2 for k in np.meshgrid(*axes, indexing="ij")))


def gaussian_field(rng: np.random.Generator, n: int, size: int, ndim: int, spectrum) -> np.ndarray:
    r"""`n` periodic fields :math:`\delta(x)` of zero mean whose power spectrum is
    ``spectrum(k)`` (an array over the rfft grid, or one per field with a leading axis of n):
    white noise filtered by :math:`\sqrt{P(k)}`, normalised to unit variance before filtering
    so that :math:`\langle \delta^2 \rangle = \sum_k P(k) / \text{size}^{ndim}`."""
    axes = tuple(range(1, ndim + 1))
    white = np.fft.rfftn(rng.standard_normal((n,) + (size,) * ndim), axes=axes)
    return np.fft.irfftn(white * np.sqrt(spectrum), s=(size,) * ndim, axes=axes)


def smooth_field(rng: np.random.Generator, n: int, size: int, slope: float = 3.0) -> np.ndarray:
    """`n` 2D fields with a power-law spectrum ``k^-slope`` (fractal clouds, coastlines,
    tissue texture), scaled to zero mean and unit standard deviation each."""
    k = wavenumbers(size, 2)
    spectrum = np.where(k > 0, np.maximum(k, 1.0) ** -slope, 0.0)
    f = gaussian_field(rng, n, size, 2, spectrum)
    return (f - f.mean((1, 2), keepdims=True)) / f.std((1, 2), keepdims=True)
