r"""The face flux of a 2-D finite-volume Euler solver: the kernel the CFD surrogate learns.

Conserved variables of a cell: :math:`U = (\rho, \rho u, \rho v, E)`; ideal gas with
:math:`p = (\gamma - 1)(E - \tfrac12 \rho (u^2 + v^2))`, sound speed :math:`c = \sqrt{\gamma p / \rho}`.
The physical flux through a face with unit normal :math:`n = (n_x, n_y)` and normal velocity
:math:`u_n = u n_x + v n_y` is

.. math::
    F(U, n) = \left(\rho u_n,\; \rho u\, u_n + p n_x,\; \rho v\, u_n + p n_y,\; (E + p) u_n\right).

Between a left and a right cell the solver uses the HLL approximate Riemann solver
(Harten, Lax & van Leer 1983) with Davis' wave-speed estimates
:math:`S_L = \min(u_{n,L} - c_L, u_{n,R} - c_R)`, :math:`S_R = \max(u_{n,L} + c_L, u_{n,R} + c_R)`:

.. math::
    F_{HLL} = \begin{cases}
        F_L & 0 \le S_L \\
        \dfrac{S_R F_L - S_L F_R + S_L S_R (U_R - U_L)}{S_R - S_L} & S_L < 0 < S_R \\
        F_R & S_R \le 0
    \end{cases}
"""

from __future__ import annotations

import numpy as np

GAMMA = 1.4


def conserved(rho, u, v, p):
    """Primitive (rho, u, v, p) -> conserved (rho, rho u, rho v, E), stacked on the last axis."""
    energy = p / (GAMMA - 1.0) + 0.5 * rho * (u * u + v * v)
    return np.stack([rho, rho * u, rho * v, energy], axis=-1)


def pressure(U):
    rho, mu, mv, energy = np.moveaxis(U, -1, 0)
    return (GAMMA - 1.0) * (energy - 0.5 * (mu * mu + mv * mv) / rho)


def physical_flux(U, n):
    """F(U, n) for states U (..., 4) and unit normals n (..., 2)."""
    rho, mu, mv, energy = np.moveaxis(U, -1, 0)
    p = pressure(U)
    un = (mu * n[..., 0] + mv * n[..., 1]) / rho
    return np.stack([rho * un, mu * un + p * n[..., 0], mv * un + p * n[..., 1], (energy + p) * un], axis=-1)


def hll_flux(UL, UR, n):
    """HLL flux from the left state to the right state through a face with normal n."""
    def speeds(U):
        un = (U[..., 1] * n[..., 0] + U[..., 2] * n[..., 1]) / U[..., 0]
        c = np.sqrt(GAMMA * pressure(U) / U[..., 0])
        return un, c

    unL, cL = speeds(UL)
    unR, cR = speeds(UR)
    sl = np.minimum(unL - cL, unR - cR)[..., None]
    sr = np.maximum(unL + cL, unR + cR)[..., None]
    FL, FR = physical_flux(UL, n), physical_flux(UR, n)
    star = (sr * FL - sl * FR + sl * sr * (UR - UL)) / (sr - sl)
    return np.where(sl >= 0, FL, np.where(sr <= 0, FR, star))
