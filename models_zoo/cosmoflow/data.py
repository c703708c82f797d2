r"""The CosmoFlow workload's data: log-normal density volumes grown from Gaussian random
fields whose power spectrum has three parameters, observed at four redshifts,

.. math::
    P(k) \propto k^{n_s} e^{-(k / k_c)^2}, \qquad \langle \delta^2 \rangle = \sigma^2,
    \qquad \rho_z = \exp\!\left(D_z \delta - \tfrac12 D_z^2 \sigma^2\right),
    \qquad D_z = \frac{1}{1 + z},

(the linear growth factor of an Einstein-de Sitter universe, channels z = 0, 0.5, 1, 1.5).
The targets are :math:`(\sigma, n_s, k_c)` mapped linearly to [-1, 1], as CosmoFlow
normalises its cosmological parameters.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached
from ..fields import gaussian_field, wavenumbers

PARAMS = ["sigma", "n_s", "k_c"]
RANGES = np.array([[0.4, 1.0], [-2.5, -1.0], [3.0, 8.0]])
REDSHIFTS = (0.0, 0.5, 1.0, 1.5)


def simulate(n: int, size: int, seed: int, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """`n` volumes (n, 4, size, size, size) of log density and their targets (n, 3)."""
    rng = np.random.default_rng(seed)
    unit = rng.uniform(size=(n, 3))
    params = RANGES[:, 0] + unit * (RANGES[:, 1] - RANGES[:, 0])
    k = wavenumbers(size, 3)
    volumes = np.empty((n, len(REDSHIFTS)) + (size,) * 3, np.float32)
    for start in range(0, n, chunk):
        sigma, n_s, k_c = (params[start:start + chunk, i].reshape(-1, 1, 1, 1) for i in range(3))
        shape = np.where(k > 0, np.maximum(k, 1.0) ** n_s * np.exp(-(k / k_c) ** 2), 0.0)
        # the rfft grid counts the k_z > 0 half-plane once; weigh it twice for the variance
        weight = np.where(np.fft.rfftfreq(size) > 0, 2.0, 1.0)
        spectrum = shape / (shape * weight).sum((1, 2, 3), keepdims=True) * size ** 3 * sigma ** 2
        delta = gaussian_field(rng, len(sigma), size, 3, spectrum)
        for c, z in enumerate(REDSHIFTS):
            d = 1.0 / (1.0 + z)
            volumes[start:start + chunk, c] = d * delta - 0.5 * (d * sigma) ** 2  # log rho
    return volumes, (2 * unit - 1).astype(np.float32)


def load(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"cosmoflow_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
