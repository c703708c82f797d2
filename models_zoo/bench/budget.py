"""Budgets without tuning: each workload trained at several targets with
``Config(target_params=t)`` (or ``target_flops=t`` with ``--kind flops``) and nothing else
changed, pruned, and the kept fraction measured.

    python -m models_zoo.bench.budget [--workloads cfd dms molhiv] [--targets 0.5 0.2 0.05]
                                      [--kind params|flops] [--scale cpu] [--out results]

Writes ``budget.json`` and ``budget.md`` (``budget_flops.*`` for FLOPs) into ``--out``. The
kept fraction is of what the budget counts, the prunable parameters (those a gate controls)
or the FLOPs of the gated layers, counted twice: by the gates (what the budget targets; see
:mod:`lumos_fx.budget`) and physically, from the pruned model's parameters or its
FlopCounterMode count on the example (lower where a cut branch took parameters no gate
controls with it).
"""

from __future__ import annotations

import time

import lumos_fx
from lumos_fx.budget import WHAT, cost_model
from lumos_fx.plan import plan_of
from lumos_fx.report import count_flops, count_params

from ..registry import get
from . import cli, report


def run(name: str, target: float, scale_name: str, seed: int = 0, kind: str = "params") -> dict:
    workload = get(name)
    scale = workload.scales[scale_name]
    task = workload.task(scale, seed)
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example, feature_names=task.feature_names,
                                  config=lumos_fx.Config(**{f"target_{kind}": target}))
    start = time.perf_counter()
    workload.train(wrapped, task, scale.steps, seed=seed, desc=f"{name} target {target:g}")
    seconds = time.perf_counter() - start
    expected = lumos_fx.expected_kept(wrapped).item()
    pruned = lumos_fx.prune(wrapped)
    snap = lumos_fx.summary(pruned).budget
    plan = plan_of(wrapped)
    total = cost_model(plan, kind).total
    counts = {"params": (count_params(wrapped), count_params(pruned)),
              "flops": (plan.example_flops, count_flops(pruned, task.example))}
    dense, cut = counts[kind]
    fixed = dense - total  # what no gate controls
    return {"workload": name, "metric": workload.metric, "kind": kind, "target": target,
            "expected_at_end": expected, "kept_by_gates_before_snap": snap.from_gates,
            "kept_by_gates": snap.after, "kept_physical": (cut - fixed) / total,
            "snap_closed": snap.closed, "snap_reopened": snap.reopened,
            "params_dense": counts["params"][0], "params_pruned": counts["params"][1],
            "flops_dense": counts["flops"][0], "flops_pruned": counts["flops"][1],
            "metric_pruned": workload.evaluate(pruned, task), "train_s": seconds}


def markdown(rows: list[dict]) -> str:
    lines = [("| workload | metric | target | expected at end | gates before snap | kept (gates) | kept (physical) "
              "| off by | snapped | parameters | FLOPs | metric |"), "|---" * 12 + "|"]
    for r in rows:
        snapped = (f"closed {r['snap_closed']}" if r["snap_closed"] else
                   f"re-opened {r['snap_reopened']}" if r["snap_reopened"] else "-")
        lines.append(f"| {r['workload']} | {r['metric']} | {r['target']:.0%} | {r['expected_at_end']:.1%} "
                     f"| {r['kept_by_gates_before_snap']:.1%} | {r['kept_by_gates']:.1%} | {r['kept_physical']:.1%} "
                     f"| {100 * (r['kept_by_gates'] - r['target']):+.1f} pp | {snapped} "
                     f"| {r['params_dense']:,} -> {r['params_pruned']:,} | {r['flops_dense']:,} -> {r['flops_pruned']:,} "
                     f"| {r['metric_pruned']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = cli.parser("lumos_fx parameter and FLOP budgets on zoo workloads", ["cfd", "dms", "molhiv"])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.2, 0.05])
    parser.add_argument("--kind", choices=sorted(WHAT), default="params", help="what the budget counts")
    args = parser.parse_args(argv)
    out = cli.out_dir(args.out)
    rows = []
    for name in args.workloads:
        for target in args.targets:
            rows.append(run(name, target, args.scale, args.seed, args.kind))
            r = rows[-1]
            print(f"{name:<10} target {target:>5.0%}  kept {r['kept_by_gates']:.1%} (gates), "
                  f"{r['kept_physical']:.1%} (physical)  {r['metric']} {r['metric_pruned']:.4f}", flush=True)
    stem = "budget" if args.kind == "params" else f"budget_{args.kind}"
    report.write_table(out, stem, rows, f"Budgets: {WHAT[args.kind]}",
                       f"Scale `{args.scale}`, seed {args.seed}; `Config(target_{args.kind}=t)`, every other setting "
                       "the default. FLOPs: forward on the example input, FlopCounterMode.", markdown(rows))
    return rows


if __name__ == "__main__":
    main()
