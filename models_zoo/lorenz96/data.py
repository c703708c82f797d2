r"""The Lorenz-96 workload's data: windows of a chaotic trajectory and the state a few steps on.

Lorenz's (1996) model of an atmospheric quantity on a latitude circle, :math:`K` variables
with cyclic indices (:math:`x_{-1} = x_{K-1}`, :math:`x_K = x_0`):

.. math::
    \frac{dx_k}{dt} = (x_{k+1} - x_{k-2})\, x_{k-1} - x_k + F,

advection (which conserves :math:`\tfrac12 \sum_k x_k^2`), damping and a constant forcing;
chaotic for :math:`F = 8`. Integrated with the classical Runge-Kutta scheme (step
:math:`\Delta t = 0.01`) from a random state, the transient discarded; each sample is its own
trajectory, so held-out samples share nothing with the training ones. A sample is a window
of ``WINDOW`` states ``SAMPLE`` time units apart and the target the state ``LEAD`` samples
after its last one; states are standardised by the data's mean and standard deviation.

Each window step also carries channels the dynamics never read, the ground truth of feature
selection: three white-noise channels and a slow sinusoid of random phase.
"""

from __future__ import annotations

import numpy as np

from ..cache import cached

K = 16
FORCING = 8.0
DT = 0.01
SAMPLE = 0.05  # time between the states of a window
WINDOW = 8
LEAD = 3  # the target is 3 samples (0.15 time units, a quarter of a Lyapunov time) after the window
SPINUP = 5.0  # time to reach the attractor from near the fixed point x = F
PERIOD = 5.0  # of the uninformative sinusoid
STATE = [f"x{k}" for k in range(K)]
UNINFORMATIVE = ["noise_1", "noise_2", "noise_3", "sinusoid"]
FEATURES = STATE + UNINFORMATIVE


def tendency(x: np.ndarray) -> np.ndarray:
    """dx/dt of states ``(..., K)``."""
    return (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(x, 1, -1) - x + FORCING


def rk4_step(x: np.ndarray, dt: float) -> np.ndarray:
    """One classical Runge-Kutta step."""
    k1 = tendency(x)
    k2 = tendency(x + 0.5 * dt * k1)
    k3 = tendency(x + 0.5 * dt * k2)
    k4 = tendency(x + dt * k3)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(x: np.ndarray, duration: float, dt: float = DT) -> np.ndarray:
    """The states ``duration`` time units after `x`, in steps of `dt`."""
    for _ in range(round(duration / dt)):
        x = rk4_step(x, dt)
    return x


def trajectories(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` trajectories on the attractor, ``WINDOW + LEAD`` states ``SAMPLE`` apart: (n, steps, K)."""
    x = integrate(FORCING + rng.standard_normal((n, K)), SPINUP)
    states = [x]
    for _ in range(WINDOW + LEAD - 1):
        states.append(integrate(states[-1], SAMPLE))
    return np.stack(states, axis=1)


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` windows (n, WINDOW, len(FEATURES)) in the order of FEATURES, and their targets (n, K)."""
    rng = np.random.default_rng(seed)
    states = trajectories(n, rng)
    states = (states - states.mean()) / states.std()
    t = SPINUP + SAMPLE * np.arange(WINDOW)
    sinusoid = np.sin(2 * np.pi * t / PERIOD + rng.uniform(0, 2 * np.pi, (n, 1)))
    noise = rng.standard_normal((n, WINDOW, 3))
    x = np.concatenate([states[:, :WINDOW], noise, sinusoid[..., None]], axis=-1)
    return x.astype(np.float32), states[:, WINDOW - 1 + LEAD].astype(np.float32)


def load(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cached(f"lorenz96_n{n}_s{seed}", lambda: simulate(n, seed))
