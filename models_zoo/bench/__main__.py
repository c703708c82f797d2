"""Benchmark lumos_fx on the zoo's workloads against dense models and the baselines.

    python -m models_zoo.bench [--scale smoke|cpu|gpu] [--workloads cfd dms ...] [--out results]
                               [--seeds 0 1 2] [--no-baselines] [--target 0.25 | --lam]

Writes ``bench.json`` (one object per workload and seed), ``baselines.json`` (one per
workload, method and seed), ``bench.md`` and the plots ``fig9_before_after.png`` and ``fig10_features.png``
into ``--out``. Every Lumos model trains to its workload's budget (``Workload.target``,
docs/zoo.md). ``make bench`` runs the CPU scale, ``make bench-smoke`` the smoke scale. The
same command and seed give the same numbers but the times, on a machine with the same thread
count and torch build (:mod:`models_zoo.reproducible`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ..registry import NAMES, get
from ..reproducible import make_deterministic
from . import report
from .run import feature_correlations, run_baselines, run_workload


def main(argv=None) -> tuple[list[dict], list[dict]]:
    parser = argparse.ArgumentParser(description="benchmark lumos_fx on the zoo's workloads")
    parser.add_argument("--scale", choices=("smoke", "cpu", "gpu"), default="cpu")
    parser.add_argument("--workloads", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--out", default="results")
    parser.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0], dest="seeds",
                        help="one run per seed; the tables give means ± std over them")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--update", action="store_true",
                        help="keep the other workloads' results already in --out, replace these")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where models train (default: the GPU when there is one)")
    parser.add_argument("--repeats", type=int, default=None, help="latency repeats (default 50, smoke 5)")
    parser.add_argument("--finetune", type=float, default=0.0,
                        help="the last fraction of the Lumos run's steps trains with its gates frozen "
                             "(fit(finetune=...)); 0: the gates train to the end")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--target", type=float, default=None,
                     help="train every Lumos model to this budget (fraction of prunable parameters kept) "
                          "instead of its workload's")
    how.add_argument("--lam", action="store_true",
                     help="train with each workload's lam and no budget (the runs before budgets)")
    args = parser.parse_args(argv)
    make_deterministic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = args.repeats or (5 if args.scale == "smoke" else 50)
    rows, base_rows, correlations, names = [], [], {}, {}
    start = time.perf_counter()
    for name in args.workloads:
        workload = get(name)
        scale = workload.scales[args.scale]
        for seed in args.seeds:
            t0 = time.perf_counter()
            row, trained = run_workload(workload, scale, seed=seed, repeats=repeats, device=args.device,
                                        target=args.target, lam=args.lam, finetune=args.finetune)
            rows.append(row | {"seed": seed})
            if seed == args.seeds[0]:  # Fig. 10 shows the first seed's run
                correlations[name] = feature_correlations(trained["task"])
                names[name] = trained["task"].feature_names or {}
            if not args.no_baselines:
                base_rows += [b | {"seed": seed} for b in run_baselines(workload, scale, row, trained, seed=seed,
                                                                         device=args.device)]
            report.write_json(out / "bench.partial.json", rows)  # what a crash later would otherwise lose
            print(f"{name:<11} seed {seed} {row['metric']:<8} dense {row['metric_dense']:.4f} lumos "
                  f"{row['metric_lumos']:.4f}  params {row['params_dense']:,} -> {row['params_lumos']:,}  features "
                  f"{row['features_kept']}/{row['features_total']}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    settings = (f"every Lumos model at a budget of {args.target:.0%} of its prunable parameters"
                if args.target is not None else "each workload's lam and no budget" if args.lam
                else "each workload's budget")
    settings += ", gate warm-up as docs/zoo.md lists, every other setting the library's default"
    seeds = f"seed {args.seeds[0]}" if len(args.seeds) == 1 else f"seeds {', '.join(map(str, args.seeds))}"
    header = (f"Scale `{args.scale}`, {seeds}, {settings}; {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
              f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}; "
              f"{time.perf_counter() - start:.0f} s in all"
              f"{' (this run: ' + ', '.join(args.workloads) + '; other rows kept)' if args.update else ''}. "
              "Latencies are medians of interleaved runs.")
    if args.update:
        rows, base_rows = _merged(out, rows, base_rows)
        for name in {r["workload"] for r in rows} - set(names):  # kept rows: their data is cached
            task = get(name).task(args.scale, args.seeds[0])
            correlations[name], names[name] = feature_correlations(task), task.feature_names or {}
    report.write_json(out / "bench.json", rows)
    report.write_json(out / "baselines.json", base_rows)
    (out / "bench.partial.json").unlink(missing_ok=True)
    (out / "bench.md").write_text(report.markdown(rows, base_rows, header))
    report.fig9(rows, out / "fig9_before_after.png")
    report.fig10(rows, correlations, names, out / "fig10_features.png")
    print(f"wrote {out / 'bench.json'}, {out / 'baselines.json'}, {out / 'bench.md'} and the plots")
    return rows, base_rows


def _merged(out: Path, rows: list[dict], base_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The results in `out` with those of the workloads just run replaced, in registry order."""
    new = {r["workload"] for r in rows}
    old = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else []
    old_base = json.loads((out / "baselines.json").read_text()) if (out / "baselines.json").exists() else []
    order = {name: i for i, name in enumerate(NAMES)}
    merged = sorted([r for r in old if r["workload"] not in new] + rows, key=lambda r: order[r["workload"]])
    merged_base = sorted([b for b in old_base if b["workload"] not in new] + base_rows,
                         key=lambda b: order[b["workload"]])
    return merged, merged_base


if __name__ == "__main__":
    main()
