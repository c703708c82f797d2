"""Every zoo workload by name: the paper's Table II in its order, then the workloads added since."""

from __future__ import annotations

from importlib import import_module

from .workload import Workload

NAMES = ("cfd", "fluid", "puremd", "synthetic", "cosmoflow", "dms", "stemdl", "emdenoise", "slstr", "optical",
         "ppa", "molhiv", "braintumor", "lorenz96", "burgers")


def get(name: str) -> Workload:
    """The workload called `name` (its package is imported on first use)."""
    if name not in NAMES:
        raise KeyError(f"no workload '{name}'; the workloads are {', '.join(NAMES)}")
    return import_module(f"models_zoo.{name}.workload").WORKLOAD


def all_workloads() -> list[Workload]:
    return [get(name) for name in NAMES]
