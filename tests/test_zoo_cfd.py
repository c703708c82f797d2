"""The CFD workload: the simulator's physics, its data set, and the demo job end to end."""

import json

import numpy as np

from models_zoo.cfd import data
from models_zoo.tensor_file import read_tensor
from models_zoo.cfd.flux import conserved, hll_flux, physical_flux


def random_states(n, seed):
    rng = np.random.default_rng(seed)
    rho, p = rng.uniform(0.5, 2, n), rng.uniform(0.4, 2.5, n)
    u, v = rng.uniform(-1, 1, (2, n))
    return conserved(rho, u, v, p)


def normals(n, seed):
    theta = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
    return np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def test_hll_is_consistent_conservative_and_rotation_invariant():
    left, right, n = random_states(500, 0), random_states(500, 1), normals(500, 2)
    np.testing.assert_allclose(hll_flux(left, left, n), physical_flux(left, n), atol=1e-12)
    np.testing.assert_allclose(hll_flux(left, right, n), -hll_flux(right, left, -n), atol=1e-12)

    def rotate(U, c, s):  # momentum rotated with the frame, scalars unchanged
        out = U.copy()
        out[:, 1], out[:, 2] = c * U[:, 1] + s * U[:, 2], -s * U[:, 1] + c * U[:, 2]
        return out

    c, s = n[:, 0], n[:, 1]
    x_axis = np.tile([1.0, 0.0], (500, 1))
    rotated = hll_flux(rotate(left, c, s), rotate(right, c, s), x_axis)
    np.testing.assert_allclose(rotate(hll_flux(left, right, n), c, s), rotated, atol=1e-12)


def test_supersonic_faces_take_the_upwind_flux():
    left = conserved(np.array([1.0]), np.array([3.0]), np.array([0.0]), np.array([1.0]))  # Mach ~2.5
    right = conserved(np.array([0.8]), np.array([2.9]), np.array([0.1]), np.array([0.9]))
    n = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(hll_flux(left, right, n), physical_flux(left, n))


def test_data_set_is_seeded_cached_and_carries_its_ground_truth(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMOS_DATA", str(tmp_path))
    x, y = data.load(2000, seed=3)
    assert list(tmp_path.glob("cfd_n2000_s3_*.npz"))
    x2, y2 = data.load(2000, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (2000, len(data.FEATURES)) and y.shape == (2000, len(data.TARGETS))
    col = {name: x[:, i] for i, name in enumerate(data.FEATURES)}
    assert np.array_equal(col["rho_L_copy"], col["rho_L"]) and np.all(col["constant"] == 1)
    for noise in ("noise_1", "noise_2", "noise_3"):
        assert max(abs(np.corrcoef(col[noise], y[:, k])[0, 1]) for k in range(4)) < 0.1
    np.testing.assert_allclose(hll_flux(x[:, :4], x[:, 4:8], x[:, 8:10]), y, rtol=1e-4, atol=1e-4)


def test_the_demo_job_runs_end_to_end(tmp_path, monkeypatch):
    from models_zoo.cfd.__main__ import main

    monkeypatch.setenv("LUMOS_DATA", str(tmp_path / "data"))
    # the AOTInductor package the demo writes for examples/cpp is tested in test_cpp_driver.py
    results = main(["--out", str(tmp_path / "out"), "--samples", "3000", "--steps", "300", "--formats"])
    assert (tmp_path / "out" / "model" / "model.py").exists()
    faces, fluxes = read_tensor(tmp_path / "out" / "faces.bin"), read_tensor(tmp_path / "out" / "fluxes_python.bin")
    assert faces.shape[1] == 15 and fluxes.shape == (faces.shape[0], 4)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["params"] == results["params"]
    assert results["max_abs_diff_pruned_vs_gated"] < 1e-3
    assert 0 < results["params"]["pruned"] < results["params"]["dense"]
    assert {"noise_1", "noise_2", "noise_3", "constant"}.isdisjoint(results["kept_features"])
    assert results["r2"]["dense"] > 0.8 and results["r2"]["pruned"] > 0.5
