"""What gating costs in training: the time of one training step of the instrumented model
over the original's, and the gates' share of the parameters.

    python -m models_zoo.bench.overhead [--workloads cfd dms molhiv] [--repeats 60]
                                        [--batch-factors 1 8] [--out results]

A step is forward, task loss (plus ``complexity_loss`` for the instrumented model),
backward and an Adam step, on the same mini-batches. The two models take turns on every
repeat, in alternating order, and the ratio is of the medians, so drift in the machine's
load hits both alike. Each workload runs at its own mini-batch and at `--batch-factors`
times it: what the gates cost per step hardly grows with the batch (they scale weights,
not activations; see :mod:`lumos_fx.gate_fold`), so their share falls as it grows.
Writes ``overhead.json`` and ``overhead.md`` into ``--out``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

import lumos_fx
from lumos_fx.report import count_params

from ..registry import get
from . import cli, report


def _step(model, opt, loss_fn, inputs, target, gated: bool) -> None:
    loss = loss_fn(model(*inputs), target)
    if gated:
        loss = loss + lumos_fx.complexity_loss(model)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def run(name: str, scale_name: str = "cpu", repeats: int = 60, warmup: int = 5, seed: int = 0,
        batch_factor: int = 1) -> dict:
    workload = get(name)
    scale = workload.scales[scale_name]
    scale = replace(scale, batch=scale.batch * batch_factor)
    task = workload.task(scale, seed)
    plain = workload.model(task, scale, seed).train()
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example).train()
    loss_fn = workload.loss(task)
    opts = {"plain": torch.optim.Adam(plain.parameters(), lr=1e-4),
            "lumos": torch.optim.Adam(lumos_fx.param_groups(wrapped, 1e-4))}
    models = {"plain": plain, "lumos": wrapped}
    gen = torch.Generator().manual_seed(seed)
    batches = [task.train(gen) for _ in range(8)]
    times: dict[str, list[float]] = {"plain": [], "lumos": []}
    for r in range(warmup + repeats):
        inputs, target = batches[r % len(batches)]
        order = ("plain", "lumos") if r % 2 == 0 else ("lumos", "plain")
        for key in order:
            start = time.perf_counter()
            _step(models[key], opts[key], loss_fn, inputs, target, key == "lumos")
            if r >= warmup:
                times[key].append(time.perf_counter() - start)
    gate_params = sum(g.log_alpha.numel() for g in lumos_fx.gates(wrapped).values())
    plain_ms, lumos_ms = (statistics.median(times[k]) * 1e3 for k in ("plain", "lumos"))
    return {"workload": name, "family": workload.family, "batch": scale.batch, "step_plain_ms": plain_ms,
            "step_lumos_ms": lumos_ms, "ratio": lumos_ms / plain_ms, "gates": len(lumos_fx.gates(wrapped)),
            "gate_params": gate_params, "model_params": count_params(plain),
            "gate_fraction": gate_params / count_params(plain)}


def markdown(rows: list[dict]) -> str:
    return report.md_table(
        ["workload", "model", "batch", "step plain ms", "step lumos ms", "ratio", "gates", "gate parameters", "of model"],
        [[r["workload"], r["family"], r["batch"], f"{r['step_plain_ms']:.2f}", f"{r['step_lumos_ms']:.2f}",
          f"{r['ratio']:.3f}x", r["gates"], f"{r['gate_params']:,}", f"{r['gate_fraction']:.2%}"] for r in rows])


def main(argv=None) -> list[dict]:
    parser = cli.parser("training-step overhead of lumos_fx gates", ["cfd", "dms", "molhiv"])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch-factors", nargs="+", type=int, default=[1, 8],
                        help="also time each workload at these multiples of its mini-batch")
    args = parser.parse_args(argv)
    out = cli.out_dir(args.out)
    rows = [run(name, args.scale, args.repeats, seed=args.seed, batch_factor=f)
            for name in args.workloads for f in args.batch_factors]
    text = markdown(rows)
    print(text, end="")
    report.write_table(out, "overhead", rows, "Training-step overhead",
                       f"Scale `{args.scale}`, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
                       f"medians of {args.repeats} interleaved steps.", text)
    return rows


if __name__ == "__main__":
    main()
