"""Feature selection against the tools made for it: Lumos's kept input features beside
LassoNet's, stochastic gates' (STG) and the dense model's permutation importance, each asked
for as many features as Lumos kept, on the workloads whose simulator says which inputs carry
information.

    python -m models_zoo.bench.feature_selection [--workloads cfd fluid puremd synthetic slstr ppa]
                                                 [--scale cpu] [--seed 0] [--out results]

- **lumos**: the features the workload's budgeted run kept (one training run).
- **permutation**: the dense model's test metric drop when one feature's values are
  shuffled across samples (nodes, pixels), the largest drops kept.
- **lassonet** (``pip install lassonet``): ``LassoNetRegressor``'s feature importances (the
  penalty at which a feature leaves the path), the largest kept; tabular workloads only.
- **stg** (``pip install stg``): a network with a stochastic gate on every input, trained
  with its L0-like penalty; the most open gates kept; tabular workloads only.

For every method the table gives the informative and uninformative features kept (the
simulator's ground truth) and the metric of the workload's dense model trained again, for the
same steps, on that method's features: the other features are held at their training mean,
so they carry nothing. A method that is not installed, or does not apply, is reported as
skipped with the reason. Writes ``feature_selection.json``, ``feature_selection.md`` and
``fig10_methods.png`` (per workload and method, the features kept) into ``--out``.
"""

from __future__ import annotations

import collections
import collections.abc
from dataclasses import replace

import numpy as np
import torch

from ..registry import get
from ..workload import Collated, Rows, Task, Workload
from . import cli, report
from .run import copy_kept, run_workload

METHODS = ("lumos", "permutation", "lassonet", "stg")
TABULAR_ROWS = 4000  # what LassoNet and STG fit on: their paths and epochs cost per row


def _columns(pruned, task: Task) -> tuple[int, int, list[str], list[int]]:
    """The named feature input of the pruned model (the zoo's workloads have one): its position
    in the inputs, its feature dim, its feature names and the indices Lumos kept."""
    (col,) = [c for c in pruned.meta["lumos_columns"] if c.path is not None and c.name in task.feature_names]
    return col.path[0].idx, col.dim, list(task.feature_names[col.name]), list(col.kept)


def _feature_tensors(data: Rows | Collated, position: int) -> list[torch.Tensor]:
    return [data.inputs[position]] if isinstance(data, Rows) else [inputs[position] for inputs, _ in data.items]


def _with_inputs(data: Rows | Collated, position: int, change) -> Rows | Collated:
    """`data` with its feature input replaced by ``change(tensor)``."""
    def swap(inputs):
        return tuple(change(t) if i == position else t for i, t in enumerate(inputs))
    if isinstance(data, Rows):
        return Rows(swap(data.inputs), data.target, data.batch)
    return Collated([(swap(inputs), target) for inputs, target in data.items])


def masked(task: Task, position: int, dim: int, keep: list[int]) -> Task:
    """`task` whose features outside `keep` hold their training mean everywhere."""
    train = _feature_tensors(task.train, position)
    moved = [t.movedim(dim, -1).reshape(-1, t.shape[dim]) for t in train]
    means = torch.cat(moved).float().mean(0)
    drop = torch.ones(len(means), dtype=torch.bool)
    drop[keep] = False

    def change(t):
        out = t.movedim(dim, -1).clone()
        out[..., drop] = means[drop].to(out.dtype)
        return out.movedim(-1, dim)
    return replace(task, train=_with_inputs(task.train, position, change),
                   test=_with_inputs(task.test, position, change))


def permutation_scores(workload: Workload, dense, task: Task, position: int, dim: int, seed: int) -> np.ndarray:
    """Per feature: how much the dense model's test metric worsens with that feature shuffled."""
    base = workload.evaluate(dense, task)
    n = _feature_tensors(task.test, position)[0].shape[dim]
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for j in range(n):
        def shuffle(t, j=j):
            out = t.movedim(dim, -1).clone()
            flat = out.reshape(-1, n)
            flat[:, j] = flat[torch.randperm(len(flat), generator=gen), j]
            return flat.reshape(out.shape).movedim(-1, dim)
        shuffled = replace(task, test=_with_inputs(task.test, position, shuffle))
        value = workload.evaluate(dense, shuffled)
        scores.append(base - value if workload.higher_is_better else value - base)
    return np.array(scores)


def _tabular(task: Task, position: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised training rows (at most TABULAR_ROWS) and targets, for LassoNet and STG."""
    x, y = task.train.inputs[position].float().numpy(), task.train.target.float().numpy()
    rows = np.random.default_rng(seed).permutation(len(x))[:TABULAR_ROWS]
    x, y = x[rows], y[rows].reshape(len(rows), -1)
    standard = (lambda a: (a - a.mean(0)) / (a.std(0) + 1e-8))
    return standard(x), standard(y)


def lassonet_scores(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    from lassonet import LassoNetRegressor

    model = LassoNetRegressor(hidden_dims=(32,), path_multiplier=1.2, n_iters=(200, 30), patience=(20, 5),
                              batch_size=256, random_state=seed, torch_seed=seed, verbose=0)
    model.path(x, y, return_state_dicts=False)
    return np.asarray(model.feature_importances_.cpu())


def stg_scores(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = 60) -> np.ndarray:
    """STG's regression takes one output: one fit per output, a feature's score the most open
    of its gates (it is needed when any output needs it)."""
    for name in ("Iterable", "Mapping", "Sequence", "Set"):  # stg 0.1.2 reads them where Python 3.10 no longer has them
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    from stg import STG

    gates = []
    for j in range(y.shape[1]):
        model = STG(device="cpu", input_dim=x.shape[1], output_dim=1, hidden_dims=[64, 32], activation="tanh",
                    sigma=0.5, lam=0.1, optimizer="Adam", learning_rate=1e-2, batch_size=256,
                    task_type="regression", random_state=seed)
        model.fit(x.astype(np.float32), y[:, j:j + 1].astype(np.float32), nr_epochs=epochs, verbose=False,
                  shuffle=True)
        gates.append(np.asarray(model.get_gates(mode="prob")))
    return np.max(gates, axis=0)


def _top(scores: np.ndarray, k: int) -> list[int]:
    return sorted(np.argsort(-scores, kind="stable")[:k].tolist())


def run(name: str, scale_name: str, seed: int) -> list[dict]:
    workload = get(name)
    scale = workload.scales[scale_name]
    row, trained = run_workload(workload, scale, seed=seed, repeats=1)
    task, dense, pruned = trained["task"], trained["dense"], trained["pruned"]
    position, dim, names, kept = _columns(pruned, task)
    k = len(kept)
    tabular = isinstance(task.train, Rows) and task.train.inputs[position].dim() == 2 and not task.info.get(
        "sequence")
    choices: dict[str, list[int] | str] = {"lumos": sorted(kept)}
    choices["permutation"] = _top(permutation_scores(workload, dense, task, position, dim, seed), k)
    for method, scorer in (("lassonet", lassonet_scores), ("stg", stg_scores)):
        if not tabular:
            choices[method] = "not tabular: the tool takes rows of features"
            continue
        try:
            choices[method] = _top(scorer(*_tabular(task, position, seed), seed), k)
        except ImportError as err:
            choices[method] = f"not installed: {err.name}"
    out = []
    for method in METHODS:
        choice = choices[method]
        entry = {"workload": name, "method": method, "metric": workload.metric, "features_total": len(names),
                 "features_asked": k}
        if isinstance(choice, str):
            out.append(entry | {"skipped": choice})
            continue
        chosen = [names[i] for i in choice]
        retrained = workload.model(task, scale, seed)
        subset = masked(task, position, dim, choice)
        workload.train(retrained, subset, scale.steps, seed=seed, desc=f"{name} on {method}'s features")
        out.append(entry | {"kept": chosen, "metric_retrained": workload.evaluate(retrained, subset),
                            "informative_kept": [f for f in workload.informative if f in chosen
                                                 or copy_kept(f, set(chosen))],
                            "uninformative_kept": [f for f in workload.uninformative if f in chosen]})
        if method == "lumos":
            out[-1]["metric_pruned"] = row["metric_lumos"]
    return out


def markdown(rows: list[dict]) -> str:
    cells = []
    for r in rows:
        if "skipped" in r:
            cells.append([r["workload"], r["method"], r["features_asked"], "", "", f"skipped ({r['skipped']})"])
            continue
        truth = get(r["workload"])
        cells.append([r["workload"], r["method"], f"{len(r['kept'])}/{r['features_total']}",
                      f"{len(r['informative_kept'])}/{len(truth.informative)}",
                      f"{len(r['uninformative_kept'])}/{len(truth.uninformative)}"
                      + (f" ({', '.join(r['uninformative_kept'])})" if r["uninformative_kept"] else ""),
                      f"{r['metric_retrained']:.4f} ({r['metric']})"])
    return report.md_table(["workload", "method", "kept", "informative kept", "uninformative kept",
                            "metric, retrained on these features"], cells)


def figure(rows: list[dict], path) -> None:
    """Per workload, one line of markers per method: a feature kept (filled) or not (hollow);
    the informative features' names in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        shown = [r for r in rows if r["workload"] == name and "kept" in r]
        features = list(get(name).informative) + list(get(name).uninformative)
        for y, r in enumerate(shown):
            for x, f in enumerate(features):
                on = f in r["kept"] or copy_kept(f, set(r["kept"]))
                ax.scatter(x, y, s=40, facecolors="#d62728" if on else "none",
                           edgecolors="#d62728" if on else "#555555")
        ax.set_yticks(range(len(shown)), [r["method"] for r in shown])
        ax.set_xticks(range(len(features)), features, rotation=90, fontsize=7)
        for label in ax.get_xticklabels()[:len(get(name).informative)]:
            label.set_fontweight("bold")
        ax.set_title(name)
    fig.suptitle("features kept (filled) by each method at Lumos's count; informative ones in bold")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    parser = cli.parser("feature selection: Lumos against LassoNet, STG and permutation importance",
                        ["cfd", "fluid", "puremd", "synthetic", "slstr", "ppa"])
    args = parser.parse_args(argv)
    out = cli.out_dir(args.out)
    rows = [r for name in args.workloads for r in run(name, args.scale, args.seed)]
    text = markdown(rows)
    report.write_table(out, "feature_selection", rows, "Feature selection against the tools made for it",
                       f"Scale `{args.scale}`, seed {args.seed}; `python -m models_zoo.bench.feature_selection`. "
                       "Every method keeps as many features as Lumos kept; the metric is the workload's dense "
                       "model trained again for the same steps with the other features held at their training "
                       f"mean. LassoNet and STG fit on {TABULAR_ROWS} standardised training rows.", text)
    figure(rows, out / "fig10_methods.png")
    print(text, end="")
    return rows


if __name__ == "__main__":
    main()
