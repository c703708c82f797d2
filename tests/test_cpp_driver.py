"""examples/cpp/flux: the AOTInductor package of a pruned model, run from C++ with no Python,
computes what the pruned model computes in Python, at a batch size it was not exported at."""

from __future__ import annotations

import shutil
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import lumos_fx
from benchmarks import cpp_driver
from models_zoo.surrogate import SurrogateMLP
from models_zoo.tensor_file import read_tensor, write_tensor
from support import set_gates

N_IN, N_OUT = 15, 4  # the CFD surrogate's face features and fluxes (models_zoo/cfd/data.py)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """The build of flux, started in the background: it compiles while the package does."""
    if shutil.which("cmake") is None or cpp_driver.compiler() is None:
        pytest.skip("building examples/cpp needs cmake and a C++ compiler")
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool.submit(cpp_driver.build, tmp_path_factory.mktemp("flux_build"))
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def flux(build) -> Path:
    return build.result()


@pytest.fixture(scope="module")
def pruned_package(build, tmp_path_factory):
    """A pruned surrogate shaped like the CFD one (15 features in, 4 fluxes out, with its
    standardisation buffers), some input features and hidden units cut, and its AOTI package.
    Asks for `build` only so that the build is under way while this compiles."""
    torch.manual_seed(0)
    gen = np.random.default_rng(0)
    stats = (gen.normal(size=N_IN), gen.uniform(0.5, 2, N_IN), gen.normal(size=N_OUT), gen.uniform(0.5, 2, N_OUT))
    x = torch.randn(64, N_IN)
    wrapped = lumos_fx.instrument(SurrogateMLP(*stats, hidden=16, depth=2), (x,))
    set_gates(wrapped, "half", seed=0)
    pruned = lumos_fx.prune(wrapped)
    assert 0 < len(pruned.kept_feature_indices["x"]) < N_IN
    folder = lumos_fx.export(pruned, tmp_path_factory.mktemp("export"), formats=("aoti",))
    return pruned, folder / "model_aoti.pt2"


def test_flux_from_cpp_matches_the_pruned_model_at_another_batch_size(pruned_package, flux, tmp_path):
    pruned, package = pruned_package
    faces = torch.randn(37, N_IN) * 3  # not the example's 64 rows
    write_tensor(tmp_path / "faces.bin", faces)
    done = cpp_driver.run(flux, "--repeat", 5, package, tmp_path / "faces.bin", tmp_path / "fluxes.bin")
    assert done.returncode == 0, done.stderr
    assert "median_us=" in done.stdout and "batch=37" in done.stdout
    with torch.no_grad():
        expected = pruned(faces)
    torch.testing.assert_close(read_tensor(tmp_path / "fluxes.bin"), expected,
                               rtol=1e-5, atol=1e-5)


def test_a_batch_of_the_wrong_width_is_refused_not_read_past_its_end(pruned_package, flux, tmp_path):
    _, package = pruned_package
    write_tensor(tmp_path / "faces.bin", np.zeros((8, N_IN - 1)))
    done = cpp_driver.run(flux, package, tmp_path / "faces.bin", tmp_path / "fluxes.bin")
    assert done.returncode != 0 and f"expected: {N_IN}, but got: {N_IN - 1}" in done.stderr
    assert not (tmp_path / "fluxes.bin").exists()


def test_missing_or_malformed_files_give_a_message_and_a_nonzero_exit(flux, tmp_path):
    faces, fluxes, package = tmp_path / "faces.bin", tmp_path / "fluxes.bin", tmp_path / "model_aoti.pt2"
    done = cpp_driver.run(flux, package, faces, fluxes)
    assert done.returncode == 1 and f"flux: cannot open {faces}" in done.stderr

    write_tensor(faces, np.zeros((4, N_IN)))
    done = cpp_driver.run(flux, package, faces, fluxes)
    assert done.returncode == 1 and f"flux: cannot open {package}" in done.stderr

    faces.write_bytes(faces.read_bytes()[:-4])
    done = cpp_driver.run(flux, package, faces, fluxes)
    assert done.returncode == 1 and "header says 4 x 15 float32 but 236 bytes follow it" in done.stderr

    done = cpp_driver.run(flux, package, faces)
    assert done.returncode == 2 and "usage: flux" in done.stderr
    assert not fluxes.exists()


def test_a_single_face_runs_with_the_packages_input_checks_on(pruned_package, flux, tmp_path):
    pruned, package = pruned_package
    faces = torch.randn(1, N_IN)
    write_tensor(tmp_path / "face.bin", faces)
    done = cpp_driver.run(flux, package, tmp_path / "face.bin", tmp_path / "flux.bin")
    assert done.returncode == 0, done.stderr
    with torch.no_grad():
        torch.testing.assert_close(read_tensor(tmp_path / "flux.bin"), pruned(faces), rtol=1e-5, atol=1e-5)
