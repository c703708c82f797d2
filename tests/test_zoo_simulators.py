"""The workloads' simulators compute what their docstrings say: seeded, and the physics or
rule behind each label checked against an independent computation."""

import numpy as np
import pytest
import torch

from models_zoo.braintumor import data as braintumor
from models_zoo.cosmoflow import data as cosmoflow
from models_zoo.dms import data as dms
from models_zoo.emdenoise import data as emdenoise
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
