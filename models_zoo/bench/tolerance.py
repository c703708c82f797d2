"""A tolerance instead of a size: each workload trained with ``lumos_fx.ToleranceSearch``
(one tolerance per metric kind, no budget picked by hand), and the size it reached.

    python -m models_zoo.bench.tolerance [--workloads ...] [--drop 0.01] [--rise 0.1] [--out results]

The search validates on the last 10% of the training data (:func:`models_zoo.workload.held_out`;
the model trains on the rest) and holds R^2 or accuracy within ``--drop`` of the best
validation, an MSE within ``--rise`` (relative) of the lowest. The table gives the kept
fraction of prunable parameters it chose, the parameters, the validation metric the search
held against and the one it chose, and the held-out test metric of the pruned model next to
the workload's dense and hand-budgeted Lumos models from ``results/bench.json`` (same
scale and seed; absent when that file is). Writes ``tolerance.json`` and ``tolerance.md``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lumos_fx
from lumos_fx.report import count_params

from ..registry import NAMES, get
from ..workload import METRICS, held_out
from . import cli, report


def run(name: str, drop: float, rise: float, scale_name: str = "cpu", seed: int = 0) -> dict:
    workload = get(name)
    scale = workload.scales[scale_name]
    task, validation = held_out(workload.task(scale, seed))
    tolerance = drop if METRICS[workload.metric][1] else rise
    config = replace(workload.lumos_config(scale.steps), target_params=None)
    dense = workload.model(task, scale, seed)
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example,
                                  feature_names=task.feature_names, config=config)
    search = workload.tolerance_search(wrapped, validation, tolerance)
    workload.train(wrapped, task, scale.steps, seed=seed, search=search, desc=f"{name} tolerance {tolerance:g}")
    pruned = lumos_fx.prune(wrapped)
    return {"workload": name, "metric": workload.metric, "tolerance": tolerance, "kept": search.chosen["kept"],
            "params_dense": count_params(dense), "params": count_params(pruned),
            "validation_best": search.chosen["reference"], "validation_chosen": search.chosen["metric"],
            "metric_test": workload.evaluate(pruned, task), "validations": len(search.log),
            "misses": sum(not r["held"] for r in search.log)}


def _validation(row: dict, key: str) -> str:
    """A validation metric as the workload reads it (the search holds -log MSE)."""
    value = row[key]
    return f"{value:.4f}" if row["metric"] != "MSE" else f"{2.718281828459045 ** -value:.4g}"


def markdown(rows: list[dict], bench: dict[str, dict]) -> str:
    def budgeted(r):
        b = bench.get(r["workload"])
        return ("", "", "") if b is None else (f"{b['metric_dense']:.4f}", f"{b['params_lumos']:,}",
                                               f"{b['metric_lumos']:.4f}")
    return report.md_table(
        ["workload", "metric", "tolerance", "kept", "params (of dense)", "validation: best", "chosen",
         "test metric", "dense (bench)", "budget (bench): params", "metric"],
        [[r["workload"], r["metric"], f"{r['tolerance']:g}" + (" (rel.)" if r["metric"] == "MSE" else ""),
          f"{r['kept']:.1%}", f"{r['params']:,} ({r['params'] / r['params_dense']:.1%})",
          _validation(r, "validation_best"), _validation(r, "validation_chosen"), f"{r['metric_test']:.4f}",
          *budgeted(r)] for r in rows])


def main(argv=None) -> list[dict]:
    parser = cli.parser("lumos_fx with a tolerance instead of a budget", NAMES)
    parser.add_argument("--drop", type=float, default=0.01, help="R^2 and accuracy: the allowed absolute drop")
    parser.add_argument("--rise", type=float, default=0.1, help="MSE: the allowed relative rise")
    args = parser.parse_args(argv)
    out = cli.out_dir(args.out)
    rows = [run(name, args.drop, args.rise, args.scale, args.seed) for name in args.workloads]
    bench_file = Path(args.out) / "bench.json"
    # the bench's run of the same seed (bench.json holds one row per workload and seed)
    bench = ({r["workload"]: r for r in json.loads(bench_file.read_text()) if r.get("seed", 0) == args.seed}
             if bench_file.exists() else {})
    text = markdown(rows, bench)
    print(text, end="")
    report.write_table(out, "tolerance", rows, "A tolerance instead of a size",
                       f"Scale `{args.scale}`, seed {args.seed}; `python -m models_zoo.bench.tolerance --drop "
                       f"{args.drop:g} --rise {args.rise:g}`. Validated on the last 10% of the training data "
                       "(21 times: after a dense phase of a fifth of the steps, then evenly); the test metric is "
                       "the pruned model's on the held-out test data. `dense (bench)` and `budget (bench)`: "
                       "results/bench.json's dense model and Lumos model at the workload's hand-picked budget, "
                       "trained on all the training data.", text)
    return rows


if __name__ == "__main__":
    main()
