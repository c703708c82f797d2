"""The tensor files of the C++ driver (examples/cpp): int64 ndim, ndim int64 sizes, then the
float32 entries row-major, all little-endian."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def write_tensor(path: Path, tensor) -> None:
    array = np.ascontiguousarray(torch.as_tensor(tensor).detach().cpu().numpy(), dtype="<f4")
    with open(path, "wb") as f:
        np.array([array.ndim, *array.shape], dtype="<i8").tofile(f)
        array.tofile(f)


def read_tensor(path: Path) -> torch.Tensor:
    with open(path, "rb") as f:
        ndim = int(np.fromfile(f, dtype="<i8", count=1)[0])
        shape = np.fromfile(f, dtype="<i8", count=ndim)
        return torch.from_numpy(np.fromfile(f, dtype="<f4").reshape(shape))
