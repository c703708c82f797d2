"""The MLP surrogate workloads (CFD, Fluid, Synthetic) by name, and one job that trains a
dense and an instrumented surrogate alike, prunes, and measures both.

    python -m models_zoo.surrogates fluid [--steps 2500] [--lam 1.0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

import lumos_fx

from .cfd import data as cfd_data
from .fluid import data as fluid_data
from .surrogate import SurrogateMLP
from .synthetic import data as synthetic_data
from .training import column_stats, r2_score, standardized_mse, train


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
                                  Surrogate("synthetic", synthetic_data, 20_000))}


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


def run(name: str, *, steps: int = 2500, lam: float | None = None, seed: int = 0) -> dict:
    """R^2, parameters and the kept inputs against the simulator's truth, dense vs pruned."""
    workload = SURROGATES[name]
    data = split(name, seed=seed)
    dense, _, pruned = fit_pair(name, data, steps=steps, lam=lam, seed=seed)
    kept = set(lumos_fx.summary(pruned).features["x"][0])
    with torch.no_grad():
        r2 = {"dense": r2_score(dense(data.x_test), data.y_test), "lumos": r2_score(pruned(data.x_test), data.y_test)}
    return {
        "workload": name, "metric": "R^2", "metric_dense": r2["dense"], "metric_lumos": r2["lumos"],
        "params_dense": sum(p.numel() for p in dense.parameters()),
        "params_lumos": sum(p.numel() for p in pruned.parameters()),
        "features_total": len(workload.data.FEATURES), "features_kept": len(kept),
        "informative_kept": workload.informative_kept(kept),
        "uninformative_kept": [f for f in workload.data.UNINFORMATIVE if f in kept],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="train, prune and measure one MLP surrogate workload")
    parser.add_argument("workload", choices=sorted(SURROGATES))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--lam", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.workload, steps=args.steps, lam=args.lam, seed=args.seed)
    informative = SURROGATES[args.workload].data.INFORMATIVE
    print(f"{args.workload}: R^2 dense {result['metric_dense']:.4f}  lumos {result['metric_lumos']:.4f}; "
          f"parameters {result['params_dense']:,} -> {result['params_lumos']:,}; inputs "
          f"{result['features_total']} -> {result['features_kept']} (informative kept "
          f"{len(result['informative_kept'])}/{len(informative)}, uninformative kept {result['uninformative_kept']})")
    return result


if __name__ == "__main__":
    main()
