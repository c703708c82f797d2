"""The zoo from the command line (also installed as ``lumos-fx``).

    python -m models_zoo list
    python -m models_zoo train WORKLOAD [--scale cpu] [--steps N]
                                        [--target 0.2 | --tolerance 0.01 | --lam L | --dense]
                                        [--seed 0] [--out out/WORKLOAD] [--formats pt2 onnx aoti]
    torchrun --nproc_per_node N -m models_zoo train WORKLOAD ...   # data-parallel, any workload

``train`` trains the workload's model instrumented (to the workload's budget, or to
``--target``, the fraction of prunable parameters to keep; ``--tolerance`` finds the
smallest model whose validation metric stays within that much of the best it reached: an
absolute drop of R^2 or accuracy, a relative rise of an MSE, validated on the last 10% of
the training data; ``--lam`` trains with that lam and no budget), prunes it, prints the summary
and the metric, and exports the pruned model to ``--out`` (``--formats``: also as a
torch.export program, ONNX, an AOTInductor package); ``--dense`` trains the plain
model instead. Under torchrun every rank trains its share of each batch and rank 0
prunes and exports.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch.distributed as dist

import lumos_fx
from lumos_fx.report import count_params

from . import distributed
from .registry import NAMES, get
from .workload import held_out


def train(args) -> dict:
    workload = get(args.workload)
    scale = workload.scales[args.scale]
    steps = args.steps or scale.steps
    task = workload.task(scale, args.seed)
    model = workload.model(task, scale, args.seed)
    rank, _ = distributed.rank_and_world()
    result = {"workload": workload.name, "metric": workload.metric, "params_dense": count_params(model)}
    if args.dense:
        workload.train(model, task, steps, seed=args.seed, desc=f"{workload.name} dense")
        result["metric_value"] = workload.evaluate(model, task)
        return result
    config = workload.lam_config(steps, args.lam) if args.lam is not None else workload.lumos_config(steps, args.target)
    search = None
    if args.tolerance is not None:
        task, validation = held_out(task)
        config = replace(config, target_params=None)
    wrapped = lumos_fx.instrument(model, task.example, feature_names=task.feature_names, config=config)
    if args.tolerance is not None:
        search = workload.tolerance_search(wrapped, validation, args.tolerance)
    workload.train(wrapped, task, steps, seed=args.seed, desc=f"{workload.name} lumos", search=search,
                   finetune=args.finetune)
    if rank > 0:
        return result
    pruned = lumos_fx.prune(wrapped)
    summary = lumos_fx.summary(pruned)
    print(summary)
    out = Path(args.out or f"out/{workload.name}")
    lumos_fx.export(pruned, out / "model", overwrite=True, formats=args.formats)
    result.update(params_pruned=count_params(pruned), metric_value=workload.evaluate(pruned, task),
                  kept_features={k: v[0] for k, v in summary.features.items()})
    if search is not None:
        result.update(tolerance=args.tolerance, chosen=search.chosen)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(prog="lumos-fx", description="lumos_fx on the zoo's workloads")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the workloads")
    t = sub.add_parser("train", help="train, prune, export one workload")
    t.add_argument("workload", choices=NAMES)
    t.add_argument("--scale", choices=("smoke", "cpu", "gpu"), default="cpu")
    t.add_argument("--steps", type=int, default=None, help="training steps (default: the scale's)")
    how = t.add_mutually_exclusive_group()
    how.add_argument("--target", type=float, default=None,
                     help="fraction of prunable parameters to keep (default: the workload's budget)")
    how.add_argument("--tolerance", type=float, default=None,
                     help="no size: the smallest model within this much of its best validation metric "
                          "(R^2, accuracy: an absolute drop; MSE: a relative rise, 0.1 for 10%%)")
    how.add_argument("--lam", type=float, default=None, help="no budget: train with this Config.lam")
    how.add_argument("--dense", action="store_true", help="train the plain model, no gates")
    t.add_argument("--finetune", type=float, default=0.0,
                   help="the last fraction of the steps trains the weights with the gates frozen "
                        "(lumos_fx.freeze_gates); 0: the gates train to the end")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="where the pruned model goes (default out/WORKLOAD)")
    t.add_argument("--formats", nargs="*", default=(), choices=("pt2", "onnx", "aoti"),
                   help="files for other runtimes beside model.py (lumos_fx.export's formats)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in NAMES:
            w = get(name)
            print(f"{name:<11} {w.family:<16} {w.metric:<9} budget {w.target:<5.0%} cpu scale: "
                  f"{w.scales['cpu'].steps} steps")
        return None
    launched = distributed.init_from_env()
    try:
        result = train(args)
        if distributed.rank_and_world()[0] == 0:
            print(json.dumps({k: v for k, v in result.items() if k != "kept_features"}))
        return result
    finally:
        if launched:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
