"""CPU latency of pruned zoo models with ``Config(round_to=r)`` at equal size: the same gates,
cut with the widths as the gates leave them (r = 1) and rounded up to multiples of 8 and
16, each snapped to the same FLOP budget.

    python -m models_zoo.bench.round_to [--workloads cfd dms stemdl] [--closed 0.6] [--target 0.2]
                                        [--multiples 1 8 16] [--repeats 200] [--out results]

Each workload's model is instrumented once per multiple with ``Config(round_to=r,
target_flops=target)`` and the same seeded gates, a fraction ``--closed`` of every group's
units closed at random (what a trained run leaves is in results/bench.md; here the widths
are the point, not the accuracy); prune() rounds the widths and snaps the gates to the
budget, so every multiple keeps the same share of the gated layers' FLOPs (a parameter
budget would let rounded convs keep FLOPs that fully connected layers give back). The dense model and every
pruned one take turns on each repeat, at batch 1 and at a large batch; the table gives
medians, the speedup over dense and the parameters kept. Writes ``round_to.json`` and
``round_to.md`` into ``--out``.
"""

from __future__ import annotations

import torch

import lumos_fx
from lumos_fx.report import count_flops, count_params

from ..measure import interleaved_latency
from ..registry import get
from . import cli, report


def close_at_random(wrapped, fraction: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            closed = torch.rand(gate.n, generator=gen) < fraction
            gate.log_alpha.copy_(torch.where(closed, -6.0, 6.0))


def run(name: str, multiples: list[int], closed: float, target: float, repeats: int, scale_name: str = "cpu",
        seed: int = 0, large: int = 256) -> list[dict]:
    workload = get(name)
    scale = workload.scales[scale_name]
    task = workload.task(scale, seed)
    dense = workload.model(task, scale, seed).eval()
    models, params = {"dense": dense}, {"dense": count_params(dense)}
    flops = {"dense": count_flops(dense, task.example)}
    for r in multiples:
        wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example,
                                      config=lumos_fx.Config(round_to=r, target_flops=target))
        close_at_random(wrapped, closed, seed)
        models[f"r{r}"] = lumos_fx.prune(wrapped).eval()
        params[f"r{r}"] = count_params(models[f"r{r}"])
        flops[f"r{r}"] = count_flops(models[f"r{r}"], task.example)
    rows = []
    for batch in (1, large):
        inputs = tuple(task.test.batches(batch)[0][0])
        times = interleaved_latency(models, inputs, repeats if batch == 1 else max(20, repeats // 10))
        for r in multiples:
            key = f"r{r}"
            rows.append({"workload": name, "family": workload.family, "round_to": r, "batch": inputs[0].shape[0],
                         "dense_ms": times["dense"] * 1e3, "pruned_ms": times[key] * 1e3,
                         "speedup": times["dense"] / times[key], "params_dense": params["dense"],
                         "params_pruned": params[key], "flops_dense": flops["dense"], "flops_pruned": flops[key]})
    return rows


def markdown(rows: list[dict]) -> str:
    return report.md_table(
        ["workload", "model", "batch", "round_to", "params", "FLOPs", "dense ms", "pruned ms", "speedup"],
        [[r["workload"], r["family"], r["batch"], r["round_to"], f"{r['params_dense']:,} -> {r['params_pruned']:,}",
          f"{r['flops_dense']:,} -> {r['flops_pruned']:,}", f"{r['dense_ms']:.3f}", f"{r['pruned_ms']:.3f}",
          f"{r['speedup']:.2f}x"] for r in rows])


def main(argv=None) -> list[dict]:
    parser = cli.parser("CPU latency of pruned models with rounded widths", ["cfd", "dms", "stemdl"])
    parser.add_argument("--multiples", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--closed", type=float, default=0.6, help="fraction of every group's units closed")
    parser.add_argument("--target", type=float, default=0.2, help="the FLOP budget every multiple is snapped to")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    out = cli.out_dir(args.out)
    rows = [row for name in args.workloads
            for row in run(name, args.multiples, args.closed, args.target, args.repeats, args.scale, args.seed)]
    text = markdown(rows)
    print(text, end="")
    report.write_table(out, "round_to", rows, "Rounded widths: CPU latency",
                       f"Scale `{args.scale}`, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
                       f"{args.closed:.0%} of every group's units closed at random (seed {args.seed}), the same gates "
                       f"for every `round_to`, each snapped to keep {args.target:.0%} of the gated layers' FLOPs; "
                       f"medians of interleaved runs ({args.repeats} at batch 1).", text)
    return rows


if __name__ == "__main__":
    main()
