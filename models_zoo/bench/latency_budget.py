"""A latency budget against a FLOP budget tuned to the same latency: each workload trained
with ``Config(target_latency=t)`` counted on a training batch of ``--batch`` real samples
(the example inputs, ``latency_batch=None``), pruned, and its latency measured against the
dense model's on test samples; then trained with ``Config(target_flops=f)``, ``f`` first the share of
the gated layers' FLOPs the latency run kept, then (up to :data:`TUNINGS` trainings, until
the two cuts' latencies are within :data:`CLOSE`) moved by the ratio of the two cut models'
measured latencies (:func:`_next_target`); the FLOP-budget model that runs closest to the
latency budget's is the one compared.

    python -m models_zoo.bench.latency_budget [--workloads cfd dms stemdl] [--targets 0.3]
                                              [--batch 256] [--repeats 40] [--out results]

Latency is the median over five rounds of the ratio of medians of interleaved runs of the
dense model and both cut ones at batch ``--batch`` on this machine (the device instrument() timed the layers on); the metric is
the workload's, on its held-out data, after the same training steps (no fine-tuning).
Writes ``latency_budget.json`` and ``latency_budget.md`` into ``--out``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import torch

import lumos_fx
from lumos_fx.budget import cost_model
from lumos_fx.plan import gate_modules, plan_of
from lumos_fx.report import count_flops

from ..measure import interleaved_latency
from ..registry import get
from . import cli, report

ROUNDS = 5  # of interleaved runs; a fraction is the median of the rounds' ratios
TUNINGS = 4  # FLOP-budget trainings at most
CLOSE = 0.10  # a FLOP cut within 10% of the latency cut's latency runs as fast


def _trained(workload, task, scale, seed: int, config: lumos_fx.Config, desc: str, example=None):
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), example or task.example,
                                  feature_names=task.feature_names, config=config)
    workload.train(wrapped, task, scale.steps, seed=seed, desc=desc)
    return wrapped, lumos_fx.prune(wrapped).eval()


def _gated_flops_kept(wrapped) -> float:
    """The share of the gated layers' FLOPs the (snapped) eval gates of `wrapped` keep."""
    cost = cost_model(plan_of(wrapped), "flops")
    with torch.no_grad():
        masks = {gid: (g.eval_value() > 0).double() for gid, g in gate_modules(wrapped).items()}
        return float(cost.expected(masks)) / cost.total


def run(name: str, target: float, batch: int, repeats: int, scale_name: str = "cpu", seed: int = 0) -> dict:
    workload = get(name)
    scale = workload.scales[scale_name]
    task = workload.task(scale, seed)
    base = replace(workload.lumos_config(scale.steps), target_params=None)
    # Timed on a batch of real samples (a training batch of that size as the example inputs):
    # copies of a few samples run data-dependent kernels faster than real batches do.
    measured_on = tuple(task.train.batches(batch)[0][0]) if hasattr(task.train, "batches") else None
    by_latency = replace(base, target_latency=target, latency_batch=None if measured_on else batch)
    wrapped, latency_cut = _trained(workload, task, scale, seed, by_latency, f"{name} latency {target:g}", measured_on)
    expected = plan_of(wrapped).latency_cost
    dense = workload.model(task, scale, seed).eval()
    inputs = tuple(task.test.batches(batch)[0][0])
    # The FLOP budget at the FLOPs the latency run kept, then at the FLOP targets that the
    # measured latencies say land on the latency run's; the closest of them is compared.
    flops, ratios, cuts = [_fraction(_gated_flops_kept(wrapped))], [], []
    while True:
        _, cut = _trained(workload, task, scale, seed, replace(base, target_flops=flops[-1]),
                          f"{name} flops {flops[-1]:.3f}")
        times = interleaved_latency({"dense": dense, "latency": latency_cut, "flops": cut}, inputs, repeats)
        cuts.append(cut)
        ratios.append(times["flops"] / times["latency"])
        if abs(math.log(ratios[-1])) <= math.log(1 + CLOSE) or len(cuts) == TUNINGS:
            break
        flops.append(_next_target(flops, ratios))
    best = min(range(len(cuts)), key=lambda i: abs(math.log(ratios[i])))
    flop_cut = cuts[best]
    rounds = [interleaved_latency({"dense": dense, "latency": latency_cut, "flops": flop_cut}, inputs, repeats)
              for _ in range(ROUNDS)]
    times = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    spread = {k: [r[k] / r["dense"] for r in rounds] for k in ("latency", "flops")}
    return {"workload": name, "metric": workload.metric, "target": target, "batch": inputs[0].shape[0],
            "dense_ms": times["dense"] * 1e3, "dense_ms_at_instrument": expected.total * 1e3,
            "latency_ms": times["latency"] * 1e3, "latency_fraction": statistics.median(spread["latency"]),
            "latency_fraction_rounds": spread["latency"], "flops_fraction_rounds": spread["flops"],
            "latency_metric": workload.evaluate(latency_cut, task), "flops_targets": flops,
            "latency_timed_at_prune": lumos_fx.summary(latency_cut).budget.measured,
            "flops_latency_ratios": ratios, "flops_target": flops[best], "flops_ms": times["flops"] * 1e3,
            "flops_fraction": statistics.median(spread["flops"]), "flops_metric": workload.evaluate(flop_cut, task),
            "flops_dense": count_flops(dense, task.example), "flops_latency_cut": count_flops(latency_cut, task.example),
            "flops_flop_cut": count_flops(flop_cut, task.example)}


def _next_target(flops: list[float], ratios: list[float]) -> float:
    """The FLOP target whose cut should run as fast as the latency budget's: the last target
    over its latency ratio (FLOP cut's over latency cut's) to the power of one over the slope
    of log latency against log FLOPs between the last two tries (1 after one try; clipped to
    0.2-2: a cut's latency falls more slowly than its FLOPs where dispatch or memory dominate)."""
    slope = 1.0
    if len(flops) > 1 and flops[-1] != flops[-2]:
        slope = math.log(ratios[-1] / ratios[-2]) / math.log(flops[-1] / flops[-2])
        slope = min(2.0, max(0.2, slope)) if math.isfinite(slope) else 1.0
    return _fraction(flops[-1] * ratios[-1] ** (-1 / slope))


def _fraction(f: float) -> float:
    return min(max(f, 1e-3), 0.999)


def markdown(rows: list[dict]) -> str:
    return report.md_table(
        ["workload", "metric", "batch", "target", "dense ms", "latency budget: ms", "of dense", "off target",
         "rounds", "timed by prune()", "metric", "FLOP budget (tuned): target", "ms", "of dense", "metric"],
        [[r["workload"], r["metric"], r["batch"], f"{r['target']:.0%}", f"{r['dense_ms']:.3f}",
          f"{r['latency_ms']:.3f}", f"{r['latency_fraction']:.1%}", f"{r['latency_fraction'] / r['target'] - 1:+.1%}",
          " ".join(f"{f:.1%}" for f in r["latency_fraction_rounds"]), f"{r['latency_timed_at_prune']:.1%}",
          f"{r['latency_metric']:.4f}", f"{r['flops_target']:.1%}", f"{r['flops_ms']:.3f}",
          f"{r['flops_fraction']:.1%}", f"{r['flops_metric']:.4f}"] for r in rows])


def main(argv=None) -> list[dict]:
    parser = cli.parser("lumos_fx latency budget against a FLOP budget", ["cfd", "dms", "stemdl"])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.3])
    parser.add_argument("--batch", type=int, default=256, help="the batch the latency is counted and measured at")
    parser.add_argument("--repeats", type=int, default=40, help="interleaved runs per round")
    args = parser.parse_args(argv)
    out = cli.out_dir(args.out)
    rows = []
    for name in args.workloads:
        for target in args.targets:
            rows.append(run(name, target, args.batch, args.repeats, args.scale, args.seed))
            r = rows[-1]
            print(f"{name:<8} target {target:.0%}: {r['latency_fraction']:.1%} of dense ({r['metric']} "
                  f"{r['latency_metric']:.4f}); FLOP budget {r['flops_target']:.1%}: {r['flops_fraction']:.1%} "
                  f"({r['flops_metric']:.4f})", flush=True)
    text = markdown(rows)
    print(text, end="")
    report.write_table(out, "latency_budget", rows, "Latency budget",
                       f"Scale `{args.scale}`, seed {args.seed}, {torch.get_num_threads()} CPU threads, torch "
                       f"{torch.__version__}; latency: medians over {ROUNDS} rounds of medians of {args.repeats} "
                       f"interleaved runs at batch {args.batch} (`rounds`: each round's fraction).", text)
    return rows


if __name__ == "__main__":
    main()
