r"""The Burgers workload's data: random smooth initial states of viscous Burgers' equation on a
periodic domain and the solution they evolve into.

.. math::
    u_t + u\, u_x = \nu\, u_{xx}, \qquad x \in [0, 2\pi) \text{ periodic}, \quad \nu = 0.1,

solved pseudo-spectrally: in Fourier space :math:`\hat u_t = -\nu k^2 \hat u -
\tfrac{ik}{2} \widehat{u^2}`, the product evaluated on the grid with the 2/3 rule (modes
above :math:`N/3` of the product dropped, so no aliased mode feeds back), and the stiff
diffusion taken exactly by an integrating factor :math:`e^{-\nu k^2 t}` around classical
Runge-Kutta steps (IF-RK4). The solver runs on ``GRID`` points and the data set samples its
solution on a coarser grid. Initial states are seeded sums of Fourier modes
:math:`u_0 = \sum_{m=1}^{M} a_m \cos(m x + \theta_m)` with :math:`a_m \sim N(0, m^{-2})`;
by :math:`T = 1` they steepen into viscous shocks.

A sample's input channels are :math:`u_0`, the grid coordinate ``grid_x`` :math:`= x / 2\pi`
(an FNO's usual second channel; the solution operator commutes with shifts, so it adds nothing
:math:`u_0` does not carry) and a decoy: an independent field drawn like :math:`u_0`,
which the dynamics never read (the ground truth of feature selection). The target is
:math:`u(x, T)`.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached

NU = 0.1
T_END = 1.0
DT = 0.005
GRID = 256  # the solver's grid; data sets sample it every GRID // size points
MODES = 4  # Fourier modes of an initial state
CHANNELS = ["u0", "grid_x", "decoy"]
INFORMATIVE = ["u0"]
UNINFORMATIVE = ["decoy"]


def grid(n: int) -> np.ndarray:
    return 2 * np.pi * np.arange(n) / n


def wavenumbers(n: int) -> np.ndarray:
    """The integer wavenumbers of ``np.fft.rfft`` on `n` points of [0, 2 pi)."""
    return np.fft.rfftfreq(n, 1.0 / n)


def advection(u_hat: np.ndarray, k: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    r""":math:`-\tfrac{ik}{2} \widehat{u^2}`, dealiased by the 2/3 rule (`keep`)."""
    u = np.fft.irfft(u_hat, n=n, axis=-1)
    return -0.5j * k * keep * np.fft.rfft(u * u, axis=-1)


def solve(u0: np.ndarray, t_end: float = T_END, nu: float = NU, dt: float = DT) -> np.ndarray:
    """``u(x, t_end)`` of initial states `u0` (..., n) on the uniform grid of [0, 2 pi), by IF-RK4."""
    n = u0.shape[-1]
    k = wavenumbers(n)
    keep = k < n / 3
    half = np.exp(-nu * k ** 2 * dt / 2)  # the integrating factor over half a step
    u_hat = np.fft.rfft(u0, axis=-1) * keep

    def f(v):
        return advection(v, k, keep, n)

    for _ in range(round(t_end / dt)):
        a = f(u_hat)
        b = f(half * (u_hat + dt / 2 * a))
        c = f(half * u_hat + dt / 2 * b)
        d = f(half ** 2 * u_hat + dt * half * c)
        u_hat = half ** 2 * u_hat + dt / 6 * (half ** 2 * a + 2 * half * (b + c) + d)
    return np.fft.irfft(u_hat, n=n, axis=-1)


def initial_states(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` random sums of the first MODES Fourier modes on the solver's grid."""
    m = np.arange(1, MODES + 1)
    amplitude = rng.standard_normal((n, MODES, 1)) / m[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n, MODES, 1))
    return (amplitude * np.cos(m[:, None] * grid(GRID) + phase)).sum(1)


def simulate(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` samples on `size` points (a divisor of GRID): inputs (n, 3, size) in the order of
    CHANNELS and targets u(x, T) (n, 1, size)."""
    rng = np.random.default_rng(seed)
    u0, decoy = initial_states(rng, n), initial_states(rng, n)
    every = GRID // size
    coordinate = np.broadcast_to(grid(size) / (2 * np.pi), (n, size))
    x = np.stack([u0[:, ::every], coordinate, decoy[:, ::every]], axis=1)
    return x.astype(np.float32), solve(u0)[:, None, ::every].astype(np.float32)


def load(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"burgers_n{n}_l{size}_s{seed}", lambda: simulate(n, size, seed))
