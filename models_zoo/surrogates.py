"""The MLP surrogate workloads (CFD, Fluid, PureMD, Synthetic) by name: their data split,
a dense and an instrumented surrogate trained alike, and each as a benchmark
:class:`~models_zoo.workload.Workload`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

import lumos_fx

from .cfd import data as cfd_data
from .fluid import data as fluid_data
from .puremd import data as puremd_data
from .surrogate import SurrogateMLP
from .synthetic import data as synthetic_data
from .training import column_stats, standardized_mse, train
from .workload import Rows, Scale, Task, Workload, standardized_loss


@dataclass(frozen=True)
class Surrogate:
    """A workload: its simulator module (``load(n, seed)``, ``FEATURES``, ``INFORMATIVE``,
    ``UNINFORMATIVE``, ``TARGETS``) and its data set size. The metric is R^2 on held-out samples."""

    name: str
    data: ModuleType
    samples: int

    def informative_kept(self, kept: set[str]) -> list[str]:
        """Informative inputs kept (CFD's rho_L counts when its exact copy is kept)."""
        copy = getattr(self.data, "DUPLICATE", None)
        return [f for f in self.data.INFORMATIVE if f in kept or (copy is not None and f == "rho_L" and copy in kept)]


SURROGATES = {s.name: s for s in (Surrogate("cfd", cfd_data, 40_000), Surrogate("fluid", fluid_data, 40_000),
                                  Surrogate("puremd", puremd_data, 40_000), Surrogate("synthetic", synthetic_data, 20_000))}


@dataclass(frozen=True)
class Split:
    """A workload's data: training and held-out samples, the standardisation statistics of
    the training part (x mean, x std, y mean, y std) and the loss in target standard deviations."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    stats: tuple
    loss_fn: Callable


def split(name: str, samples: int | None = None, seed: int = 0) -> Split:
    """The first 80% of the workload's (cached) samples for training, the rest held out."""
    workload = SURROGATES[name]
    x_all, y_all = workload.data.load(samples or workload.samples, seed)
    cut = int(0.8 * len(x_all))
    stats = (*column_stats(x_all[:cut]), *column_stats(y_all[:cut]))
    return Split(torch.as_tensor(x_all[:cut]), torch.as_tensor(y_all[:cut]), torch.as_tensor(x_all[cut:]),
                 torch.as_tensor(y_all[cut:]), stats, standardized_mse(torch.as_tensor(stats[3])))


def fit_pair(name: str, data: Split, *, steps: int = 2500, lam: float | None = None, seed: int = 0,
             hidden: int = 256, depth: int = 4) -> tuple[torch.nn.Module, torch.fx.GraphModule, torch.fx.GraphModule]:
    """Train a dense and an instrumented SurrogateMLP alike (same seed, loop and data), prune
    the instrumented one: (dense, wrapped, pruned)."""
    torch.manual_seed(seed)
    dense = SurrogateMLP(*data.stats, hidden=hidden, depth=depth)
    train(dense, data.x, data.y, steps=steps, seed=seed, loss_fn=data.loss_fn, desc=f"{name} dense")
    torch.manual_seed(seed)
    config = lumos_fx.Config() if lam is None else lumos_fx.Config(lam=lam)
    wrapped = lumos_fx.instrument(SurrogateMLP(*data.stats, hidden=hidden, depth=depth), (data.x[:256],),
                                  feature_names=SURROGATES[name].data.FEATURES, config=config)
    train(wrapped, data.x, data.y, steps=steps, seed=seed, loss_fn=data.loss_fn, desc=f"{name} lumos")
    return dense, wrapped, lumos_fx.prune(wrapped)


SCALES = {
    "smoke": Scale(samples=2_000, steps=60, batch=256, width=0.25),
    "cpu": Scale(samples=40_000, steps=2500, batch=512),
    "gpu": Scale(samples=200_000, steps=10_000, batch=2048),
}


def workload(name: str, **settings) -> Workload:
    """The surrogate as a benchmark workload: R^2 of a SurrogateMLP (hidden 256 x width, depth
    4); `settings` are the Workload's lumos_fx settings (``lam``, ``warmup``)."""
    surrogate = SURROGATES[name]

    def data(scale: Scale, seed: int) -> Task:
        d = split(name, scale.samples, seed)
        return Task(Rows((d.x,), d.y, scale.batch), Rows((d.x_test,), d.y_test, scale.batch), (d.x[:256],),
                    {"x": list(surrogate.data.FEATURES)}, {"stats": d.stats})

    def build(task: Task, scale: Scale) -> torch.nn.Module:
        return SurrogateMLP(*task.info["stats"], hidden=max(8, round(256 * scale.width)))

    return Workload(name, "MLP", "R^2", data, build, standardized_loss, SCALES, **settings,
                    informative=tuple(surrogate.data.INFORMATIVE), uninformative=tuple(surrogate.data.UNINFORMATIVE))
