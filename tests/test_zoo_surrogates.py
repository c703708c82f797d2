"""The MLP surrogate workloads' simulators: seeded, and their outputs depend on exactly the
inputs they call informative (the ground truth of feature selection)."""

import numpy as np
import pytest

from models_zoo.fluid import data as fluid
from models_zoo.surrogates import SURROGATES
from models_zoo.synthetic import data as synthetic


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_simulators_are_seeded_and_shaped_as_named(name):
    data = SURROGATES[name].data
    x, y = data.simulate(500, 3)
    x2, y2 = data.simulate(500, 3)
    assert x.shape == (500, len(data.FEATURES)) and y.shape == (500, len(data.TARGETS))
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and np.isfinite(y).all()
    assert not np.array_equal(x, data.simulate(500, 4)[0])


def test_the_synthetic_target_reads_x1_to_x5_only():
    x, y = synthetic.simulate(2000, 0)
    # Friedman #1 without its noise, recomputed from the informative columns alone
    clean = 10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
    assert abs(np.std(y[:, 0] - clean) - 1.0) < 0.05  # what is left is the unit noise
    assert all(abs(np.corrcoef(x[:, i], y[:, 0] - clean)[0, 1]) < 0.06 for i in range(10))


def test_the_sph_force_depends_on_the_informative_inputs_only():
    x, y = fluid.simulate(200, 1)
    offset, dv, rho_i, rho_j = x[:, 0:3], x[:, 3:6], x[:, 6], x[:, 7]
    np.testing.assert_allclose(fluid.pair_force(offset.astype(np.float64), dv, rho_i, rho_j), y, rtol=1e-4, atol=1e-4)
    # Newton's third law: swapping the particles reverses the pressure force; the viscous
    # force of symmetric densities reverses too.
    same = np.full(len(x), fluid.RHO0 * 1.01)
    f_ij = fluid.pair_force(offset.astype(np.float64), dv, same, same)
    f_ji = fluid.pair_force(-offset.astype(np.float64), -dv, same, same)
    np.testing.assert_allclose(f_ij, -f_ji, rtol=1e-10)
    assert (np.linalg.norm(offset, axis=1) < fluid.H).all()
