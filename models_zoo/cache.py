"""On-disk cache of simulated data sets (seeded, so a cache entry is just a speed-up)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

VERSION = 1


def cache_dir() -> Path:
    """``$LUMOS_DATA`` if set, else ``.cache/lumos_zoo`` under the working directory."""
    return Path(os.environ.get("LUMOS_DATA", Path.cwd() / ".cache" / "lumos_zoo"))


def cached(key: str, make: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    path = cache_dir() / f"{key}_v{VERSION}.npz"
    if path.exists():
        with np.load(path) as data:
            return tuple(data[f"a{i}"] for i in range(len(data.files)))
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **{f"a{i}": a for i, a in enumerate(arrays)})
    os.replace(tmp, path)
    return arrays


def cached_objects(key: str, make: Callable[[], object]) -> object:
    """Like :func:`cached` for tensors in lists and tuples (graph data sets), with torch.save."""
    import torch

    path = cache_dir() / f"{key}_v{VERSION}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.pt")
    torch.save(value, tmp)
    os.replace(tmp, path)
    return value
