"""The workloads' simulators compute what their docstrings say: seeded, and the physics or
rule behind each label checked against an independent computation."""

import numpy as np
import pytest
import torch

from models_zoo.braintumor import data as braintumor
from models_zoo.burgers import data as burgers
from models_zoo.cosmoflow import data as cosmoflow
from models_zoo.dms import data as dms
from models_zoo.emdenoise import data as emdenoise
from models_zoo.lorenz96 import data as lorenz96
from models_zoo.molhiv import data as molhiv
from models_zoo.optical import data as optical
from models_zoo.ppa import data as ppa
from models_zoo.puremd import data as puremd
from models_zoo.slstr import data as slstr
from models_zoo.stemdl import data as stemdl

IMAGES = [(cosmoflow, 8), (dms, 16), (stemdl, 16), (emdenoise, 16), (slstr, 16), (optical, 16), (braintumor, 16)]


@pytest.mark.parametrize("module,size", IMAGES, ids=[m.__name__.split(".")[-2] for m, _ in IMAGES])
def test_image_simulators_are_seeded(module, size):
    x, y = module.simulate(12, size, 5)
    x2, y2 = module.simulate(12, size, 5)
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and np.isfinite(x).all()
    assert not np.array_equal(x, module.simulate(12, size, 6)[0])
    assert x.shape[0] == 12 and x.shape[-1] == size and x.dtype == np.float32


def test_puremd_force_is_minus_the_gradient_of_the_bonded_energy():
    x, y = puremd.simulate(64, 0)
    pos = torch.tensor(x[:, :6].astype(np.float64), requires_grad=True)
    rij, rkj = pos[:, :3], pos[:, 3:6]
    k_b, r0, k_a, theta0 = (torch.tensor(x[:, 6 + i].astype(np.float64)) for i in range(4))
    dij, dkj = rij.norm(dim=1), rkj.norm(dim=1)
    theta = torch.acos((rij * rkj).sum(1) / (dij * dkj))
    energy = (k_b * (dij - r0) ** 2 + k_a * (theta - theta0) ** 2).sum()
    (grad,) = torch.autograd.grad(energy, pos)
    # x_i enters only through r_ij = x_i - x_j
    np.testing.assert_allclose(-grad[:, :3].numpy(), y, rtol=1e-3, atol=1e-3)


def test_cosmoflow_fields_have_the_variance_they_were_drawn_with():
    volumes, targets = cosmoflow.simulate(48, 16, 0)
    lo, hi = cosmoflow.RANGES[0]
    sigma = lo + (targets[:, 0] + 1) / 2 * (hi - lo)
    measured = volumes[:, 0].std(axis=(1, 2, 3))  # z = 0: log rho = delta - sigma^2 / 2
    assert np.corrcoef(measured, sigma)[0, 1] > 0.95
    # higher redshift: the same field scaled by the growth factor 1 / (1 + z)
    np.testing.assert_allclose(volumes[:, 3].std(axis=(1, 2, 3)), measured / 2.5, rtol=1e-4)


def test_dms_patterns_peak_where_the_short_range_order_puts_them():
    x, y = dms.simulate(90, 16, 0)
    centre = x[:, 0, 7:10, 7:10].mean((1, 2))  # q = 0 after fftshift
    corner = x[:, 0, :2, :2].mean((1, 2))  # q = (pi, pi)
    clustering, ordering = y == dms.CLASSES.index("clustering"), y == dms.CLASSES.index("ordering")
    assert centre[clustering].mean() > 1.5 * centre[ordering].mean()
    assert corner[ordering].mean() > 1.5 * corner[clustering].mean()


def test_stemdl_square_and_hexagonal_patterns_have_their_rotational_symmetry():
    rng = np.random.default_rng(0)
    for kind, fold in (("square", 4), ("hexagonal", 6)):
        recip = np.linalg.inv(stemdl.basis(kind, rng)).T
        g = np.stack(np.meshgrid(np.arange(-3, 4), np.arange(-3, 4)), -1).reshape(-1, 2) @ recip
        angle = 2 * np.pi / fold
        rotated = g @ np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        shortest = g[np.argsort(np.linalg.norm(g, axis=1))[1]]
        turned = shortest @ np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        assert np.min(np.linalg.norm(g - turned, axis=1)) < 1e-9, kind
        assert len(rotated) == len(g)


def test_slstr_clouds_are_bright_and_cold():
    x, mask = slstr.simulate(20, 32, 0)
    cloud, clear = mask.astype(bool), ~mask.astype(bool)
    visible, thermal = x[:, slstr.BANDS.index("S1_555nm")], x[:, slstr.BANDS.index("S8_10.8um")]
    assert visible[cloud].mean() > visible[clear].mean() + 1.0
    assert thermal[cloud].mean() < thermal[clear].mean() - 1.0
    noise = x[:, slstr.BANDS.index("dark_current")]
    assert abs(noise[cloud].mean() - noise[clear].mean()) < 0.1


def test_optical_undamaged_beams_are_their_own_target_up_to_camera_noise():
    x, clean = optical.simulate(40, 32, 0)
    residual = (x - clean).std(axis=(1, 2, 3))
    undamaged = residual < 0.03
    assert 5 < undamaged.sum() < 35  # about half the beams pass a damaged optic
    assert np.all(residual[~undamaged] > 0.03)


def test_braintumor_lesions_are_bright_spots_inside_the_brain():
    x, y = braintumor.simulate(200, 32, 0)
    bright = (x[:, 0, 6:26, 6:26] > 0.85).sum((1, 2))
    assert bright[y == 1].mean() > bright[y == 0].mean() + 3


def test_molhiv_labels_follow_the_rule_read_back_from_the_features():
    graphs, labels = molhiv.simulate(150, 0)
    assert 0.3 < labels.float().mean() < 0.7
    n_idx, cl_idx, c_idx = 6, 16, 5  # atomic number - 1
    for (x, edge_index, edge_attr), label in zip(graphs, labels.tolist()):
        aromatic_bonds = torch.zeros(len(x), dtype=torch.long).index_add_(
            0, edge_index[0], (edge_attr[:, 0] == molhiv.AROMATIC).long())
        aromatic_n = bool(((x[:, 0] == n_idx) & (aromatic_bonds >= 2)).any())
        src, dst = edge_index
        halo_aryl = bool(((x[src, 0] == cl_idx) & (x[dst, 0] == c_idx) & (aromatic_bonds[dst] >= 2)).any())
        assert label == int(aromatic_n and halo_aryl)
        assert (x[:, 7] == (aromatic_bonds > 0).long()).all()


def test_ppa_generators_differ_in_structure():
    graphs, labels = ppa.simulate(200, 0)
    max_degree = torch.tensor([float(torch.bincount(g[1][0]).max()) for g in graphs])
    triangles = torch.tensor([float(g[2][:, 4].mean()) for g in graphs])
    ba, er = labels == ppa.CLASSES.index("barabasi_albert"), labels == ppa.CLASSES.index("erdos_renyi")
    geo = labels == ppa.CLASSES.index("geometric")
    assert max_degree[ba].mean() > max_degree[er].mean() + 2
    assert triangles[geo].mean() > triangles[er].mean() + 0.2


def test_lorenz96_rk4_is_fourth_order():
    x0 = lorenz96.trajectories(4, np.random.default_rng(0))[:, -1]
    exact = lorenz96.integrate(x0, 0.4, dt=0.4 / 512)
    errors = [np.abs(lorenz96.integrate(x0, 0.4, dt=dt) - exact).max() for dt in (0.04, 0.02, 0.01)]
    # halving the step divides the error by 2^4
    assert all(12 < coarse / fine < 20 for coarse, fine in zip(errors, errors[1:])), errors


def test_lorenz96_conserves_energy_in_advection_and_has_lorenz_s_climate():
    x = np.random.default_rng(1).standard_normal((50, lorenz96.K))
    # the advection term moves energy between variables: d(|x|^2 / 2)/dt = -|x|^2 + F sum x
    np.testing.assert_allclose((x * lorenz96.tendency(x)).sum(1), -(x * x).sum(1) + lorenz96.FORCING * x.sum(1),
                               atol=1e-10)
    states = lorenz96.trajectories(300, np.random.default_rng(2))
    assert 2.1 < states.mean() < 2.6 and 3.4 < states.std() < 3.9  # F = 8: mean 2.3, std 3.6
    # chaos: two states 1e-8 apart separate as e^(lambda t), lambda about 1.7 per time unit for F = 8
    start = states[:20, -1]
    apart = np.abs(lorenz96.integrate(start, 8.0) - lorenz96.integrate(start + 1e-8, 8.0)).max(1)
    assert 1.0 < np.median(np.log(apart / 1e-8)) / 8.0 < 2.5


def test_lorenz96_windows_are_trajectory_steps_and_the_extra_channels_carry_nothing():
    x, y = lorenz96.simulate(400, 3)
    assert x.shape == (400, lorenz96.WINDOW, len(lorenz96.FEATURES)) and y.shape == (400, lorenz96.K)
    assert np.array_equal(x, lorenz96.simulate(400, 3)[0]) and not np.array_equal(x, lorenz96.simulate(400, 4)[0])
    states = lorenz96.trajectories(400, np.random.default_rng(3))
    mean, std = states.mean(), states.std()
    np.testing.assert_allclose(x[..., :lorenz96.K] * std + mean, states[:, :lorenz96.WINDOW], rtol=1e-5, atol=1e-4)
    ahead = lorenz96.integrate(states[:, lorenz96.WINDOW - 1], lorenz96.LEAD * lorenz96.SAMPLE)
    np.testing.assert_allclose(y * std + mean, ahead, rtol=1e-5, atol=1e-4)
    extra = x[:, -1, lorenz96.K:]
    assert max(abs(np.corrcoef(extra[:, i], y[:, k])[0, 1]) for i in range(4) for k in range(lorenz96.K)) < 0.2


def cole_hopf(x, t, nu):
    r"""Burgers' equation solved exactly: :math:`u = -2\nu\, \phi_x / \phi` for the heat
    equation's :math:`\phi_t = \nu \phi_{xx}`, :math:`\phi = 1 + \sum_m b_m e^{-\nu m^2 t} \cos(m x + c_m)`."""
    b, m, c = np.array([0.8, 0.15]), np.array([1, 3]), np.array([0.0, 1.0])
    decay = b[:, None] * np.exp(-nu * m[:, None] ** 2 * t)
    phi = 1 + (decay * np.cos(m[:, None] * x + c[:, None])).sum(0)
    phi_x = -(decay * m[:, None] * np.sin(m[:, None] * x + c[:, None])).sum(0)
    return -2 * nu * phi_x / phi


def test_the_burgers_solver_matches_the_cole_hopf_solution():
    x, nu = burgers.grid(burgers.GRID), burgers.NU
    u0 = cole_hopf(x, 0.0, nu)
    assert np.abs(np.gradient(u0, x)).max() > 0.5  # a steep front, not a linear wave
    np.testing.assert_allclose(burgers.solve(u0[None], 1.0, nu)[0], cole_hopf(x, 1.0, nu), atol=1e-9)


def test_burgers_conserves_the_mean_dissipates_energy_and_is_seeded():
    rng = np.random.default_rng(0)
    u0 = burgers.initial_states(rng, 6) + rng.uniform(-0.5, 0.5, (6, 1))
    energy = [(u0 ** 2).mean(1)]
    for t in (0.5, 1.0):
        u = burgers.solve(u0, t)
        np.testing.assert_allclose(u.mean(1), u0.mean(1), atol=1e-12)
        energy.append((u ** 2).mean(1))
    assert np.all(np.diff(energy, axis=0) < 0)
    np.testing.assert_allclose(burgers.solve(u0, dt=burgers.DT / 2), burgers.solve(u0), atol=1e-4)  # converged in dt
    x, y = burgers.simulate(5, 64, 1)
    coarse, target = burgers.simulate(5, 32, 1)  # the same solutions on every other point
    assert np.array_equal(coarse, x[..., ::2]) and np.array_equal(target, y[..., ::2])
    assert not np.array_equal(x, burgers.simulate(5, 64, 2)[0])
    np.testing.assert_allclose(x[:, 1], np.broadcast_to(burgers.grid(64) / (2 * np.pi), (5, 64)), atol=1e-7)
