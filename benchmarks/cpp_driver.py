"""The C++ driver of examples/cpp (``flux``): built with CMake against the libtorch inside the
torch wheel, run on tensor files (:mod:`models_zoo.tensor_file`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent.parent / "examples" / "cpp"


def compiler() -> str | None:
    """A C++ compiler on PATH (``$CXX`` first), or None."""
    return next(filter(None, (shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++", "clang++"))), None)


def build(folder: Path) -> Path:
    """Configure and build ``flux`` in `folder` (Release; ninja where installed); its path."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    steps = [["cmake", "-S", str(SOURCE), "-B", str(folder), *generator, "-DCMAKE_BUILD_TYPE=Release",
              f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
             ["cmake", "--build", str(folder)]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")
    return folder / "flux"


def run(driver: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=None if env is None else os.environ | env)


def time_calls(driver: Path, package: Path, inputs: Path, calls: int) -> float:
    """The driver's median seconds per call of `package` on `inputs` over `calls` calls, with
    the package's input checks off (as a simulation code that has checked its batch once)."""
    done = run(driver, "--repeat", calls, package, inputs, inputs.with_suffix(".out.bin"),
               env={"AOTI_RUNTIME_CHECK_INPUTS": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"flux failed on {package}: {done.stderr.strip()}")
    return float(re.search(r"median_us=([\d.e+-]+)", done.stdout).group(1)) * 1e-6
