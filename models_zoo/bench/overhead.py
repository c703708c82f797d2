"""What gating costs in training: the time of one training step of the instrumented model
over the original's, and the gates' share of the parameters.

    python -m models_zoo.bench.overhead [--workloads cfd dms molhiv] [--repeats 60]
                                        [--batch-factors 1 8] [--compile] [--out results]

A step is forward, task loss (plus ``complexity_loss`` for the instrumented model),
backward and an Adam step, on the same mini-batches. The two models take turns on every
repeat, in alternating order, and the ratio is of the medians, so drift in the machine's
load hits both alike. Each workload runs at its own mini-batch and at `--batch-factors`
times it: what the gates cost per step hardly grows with the batch (they scale weights,
not activations; see :mod:`lumos_fx.gate_fold`), so their share falls as it grows.
With ``--compile`` both models run under ``torch.compile`` (the gate bank and the complexity
term stay eager). Writes ``overhead.json`` and ``overhead.md`` (``overhead_compiled.*``) into ``--out``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch
from torch import nn

import lumos_fx
from lumos_fx.plan import GATES
from lumos_fx.report import count_params

from ..registry import get
from . import cli, report


def _step(model, opt, loss_fn, inputs, target, gated: bool) -> None:
    loss = loss_fn(model(*inputs), target)  # model: the instrumented one, or it under torch.compile
    if gated:
        loss = loss + lumos_fx.complexity_loss(model)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _setup(name: str, scale_name: str, seed: int, batch_factor: int):
    workload = get(name)
    scale = workload.scales[scale_name]
    scale = replace(scale, batch=scale.batch * batch_factor)
    task = workload.task(scale, seed)
    gen = torch.Generator().manual_seed(seed)
    return workload, scale, task, [task.train(gen) for _ in range(8)]


def _medians(variants: dict, loss_fn, batches, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of a training step of each ``(model, optimizer, with complexity term)``,
    the variants taking turns on every repeat, in alternating order."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    keys = list(variants)
    for r in range(warmup + repeats):
        inputs, target = batches[r % len(batches)]
        for key in keys if r % 2 == 0 else keys[::-1]:
            model, opt, gated = variants[key]
            start = time.perf_counter()
            _step(model, opt, loss_fn, inputs, target, gated)
            if r >= warmup:
                times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def run(name: str, scale_name: str = "cpu", repeats: int = 60, warmup: int = 5, seed: int = 0,
        batch_factor: int = 1, compiled: bool = False) -> dict:
    workload, scale, task, batches = _setup(name, scale_name, seed, batch_factor)
    plain = workload.model(task, scale, seed).train()
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example).train()
    run_plain, run_wrapped = (torch.compile(plain), torch.compile(wrapped)) if compiled else (plain, wrapped)
    times = _medians({"plain": (run_plain, torch.optim.Adam(plain.parameters(), lr=1e-4), False),
                      "lumos": (run_wrapped, torch.optim.Adam(lumos_fx.param_groups(wrapped, 1e-4)), True)},
                     workload.loss(task), batches, repeats, warmup + (3 if compiled else 0))
    gate_params = sum(g.log_alpha.numel() for g in lumos_fx.gates(wrapped).values())
    plain_ms, lumos_ms = (times[k] * 1e3 for k in ("plain", "lumos"))
    return {"workload": name, "family": workload.family, "batch": scale.batch, "step_plain_ms": plain_ms,
            "step_lumos_ms": lumos_ms, "ratio": lumos_ms / plain_ms, "gates": len(lumos_fx.gates(wrapped)),
            "gate_params": gate_params, "model_params": count_params(plain),
            "gate_fraction": gate_params / count_params(plain)}


class _FixedGates(nn.ModuleDict):
    """A gate bank (its gates and their buffers kept) that returns fixed values, leaves with a
    gradient: what scaling the weights by gates costs, without sampling them, counting them
    or updating them."""

    def __init__(self, bank) -> None:
        super().__init__(bank)
        self.fixed = [torch.ones(g.n, requires_grad=True) for g in bank.values()]

    def forward(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.fixed)


PARTS = ("weights x fixed gates", "gates sampled", "+ Adam on the gates", "+ complexity term")


def attribute(name: str, scale_name: str = "cpu", repeats: int = 100, warmup: int = 10, seed: int = 0) -> dict:
    """What each part of gating adds to a training step, one variant per part, interleaved
    in one process: the weight products with fixed gates, the bank's sample (gates out of
    the optimizer, no complexity term), then Adam on the gates, then the complexity term."""
    workload, scale, task, batches = _setup(name, scale_name, seed, 1)
    plain = workload.model(task, scale, seed).train()
    models = [lumos_fx.instrument(workload.model(task, scale, seed), task.example).train() for _ in PARTS]
    weights_only = [lumos_fx.param_groups(m, 1e-4)[0] for m in models[:2]]
    setattr(models[0], GATES, _FixedGates(getattr(models[0], GATES)))
    variants = {"plain": (plain, torch.optim.Adam(plain.parameters(), lr=1e-4), False)}
    variants[PARTS[0]] = (models[0], torch.optim.Adam([weights_only[0]]), False)
    variants[PARTS[1]] = (models[1], torch.optim.Adam([weights_only[1]]), False)
    variants[PARTS[2]] = (models[2], torch.optim.Adam(lumos_fx.param_groups(models[2], 1e-4)), False)
    variants[PARTS[3]] = (models[3], torch.optim.Adam(lumos_fx.param_groups(models[3], 1e-4)), True)
    times = _medians(variants, workload.loss(task), batches, repeats, warmup)
    row = {"workload": name, "batch": scale.batch, "step_plain_ms": times["plain"] * 1e3}
    previous = times["plain"]
    for part in PARTS:
        row[part] = (times[part] - previous) * 1e3  # what this part adds to the one before
        previous = times[part]
    row["ratio"] = times[PARTS[-1]] / times["plain"]
    return row


def markdown(rows: list[dict]) -> str:
    return report.md_table(
        ["workload", "model", "batch", "step plain ms", "step lumos ms", "ratio", "gates", "gate parameters", "of model"],
        [[r["workload"], r["family"], r["batch"], f"{r['step_plain_ms']:.2f}", f"{r['step_lumos_ms']:.2f}",
          f"{r['ratio']:.3f}x", r["gates"], f"{r['gate_params']:,}", f"{r['gate_fraction']:.2%}"] for r in rows])


def parts_markdown(rows: list[dict]) -> str:
    return report.md_table(
        ["workload", "batch", "step plain ms", *(f"{p}: ms" for p in PARTS), "ratio"],
        [[r["workload"], r["batch"], f"{r['step_plain_ms']:.2f}", *(f"{r[p]:+.3f}" for p in PARTS),
          f"{r['ratio']:.3f}x"] for r in rows])


def main(argv=None) -> list[dict]:
    parser = cli.parser("training-step overhead of lumos_fx gates", ["cfd", "dms", "molhiv"])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch-factors", nargs="+", type=int, default=[1, 8],
                        help="also time each workload at these multiples of its mini-batch")
    parser.add_argument("--compile", action="store_true", help="both models under torch.compile")
    parser.add_argument("--parts", action="store_true",
                        help="instead: what each part of gating adds to a step, at the workloads' own batch")
    args = parser.parse_args(argv)
    out = cli.out_dir(args.out)
    if args.parts:
        rows = [attribute(name, args.scale, args.repeats, seed=args.seed) for name in args.workloads]
        text = parts_markdown(rows)
        print(text, end="")
        report.write_table(out, "overhead_parts", rows, "What each part of gating adds to a training step",
                           f"Scale `{args.scale}`, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
                           f"medians of {args.repeats} interleaved steps; each part's ms is what it adds to "
                           "the variant before it.", text)
        return rows
    rows = [run(name, args.scale, args.repeats, seed=args.seed, batch_factor=f, compiled=args.compile)
            for name in args.workloads for f in args.batch_factors]
    text = markdown(rows)
    print(text, end="")
    under = " under torch.compile" if args.compile else ""
    report.write_table(out, "overhead_compiled" if args.compile else "overhead", rows, f"Training-step overhead{under}",
                       f"Scale `{args.scale}`, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
                       f"medians of {args.repeats} interleaved steps{under}.", text)
    return rows


if __name__ == "__main__":
    main()
