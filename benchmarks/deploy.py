"""Latency of dense and pruned zoo models in the runtimes a simulation code can call them
from: the eager fx module, ``torch.compile``, an AOTInductor package loaded from Python, the
C++ driver of ``examples/cpp`` (no Python), and onnxruntime.

    python -m benchmarks.deploy [--workloads cfd dms] [--batches 1 64 4096] [--repeats 200]
                                [--steps N] [--out results]

Each workload's model is trained to its budget (``python -m models_zoo train``'s settings;
``--steps`` shortens it) and pruned; the dense model is the same network instrumented with
every gate open and cut (nothing goes), so both run the same code path in every runtime.
Both are exported with ``formats=("onnx", "aoti")``. At every batch size the Python
runtimes of both models take turns on each repeat (medians of interleaved runs); the C++
driver times its own calls (``--repeat``), dense and pruned alternating over three rounds,
the median kept. The table gives the pruned/dense speedup per runtime next to the FLOP
ratio. Writes ``deploy.json`` and ``deploy.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import lumos_fx
from lumos_fx.export_formats import load_format
from lumos_fx.report import count_flops
from models_zoo.bench import report
from models_zoo.bench.round_to import close_at_random
from models_zoo.measure import interleaved_latency
from models_zoo.registry import get
from models_zoo.tensor_file import write_tensor

from . import cpp_driver


def models(name: str, steps: int | None, seed: int = 0):
    """The workload's task and its dense and pruned models, each as the GraphModule prune() gives."""
    workload = get(name)
    scale = workload.scales["cpu"]
    task = workload.task(scale, seed)
    steps = steps or scale.steps
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example,
                                  config=workload.lumos_config(steps))
    workload.train(wrapped, task, steps, seed=seed, desc=f"{name} lumos")
    dense = lumos_fx.instrument(workload.model(task, scale, seed), task.example)
    close_at_random(dense, 0.0, seed)  # every gate open
    return task, {"dense": lumos_fx.prune(dense).eval(), "pruned": lumos_fx.prune(wrapped).eval()}


def _inputs(task, batch: int) -> tuple:
    """`batch` test inputs (the test rows repeated where there are fewer)."""
    x = task.test.inputs[0]
    return (x[torch.arange(batch) % len(x)],)


def _runtimes(module, folder: Path) -> dict:
    """The model's callables in every Python runtime."""
    return {"eager": module, "compile": torch.compile(module, dynamic=False),
            "aoti": load_format(folder, "aoti"), "onnxruntime": load_format(folder, "onnx")}


def run(name: str, batches: list[int], repeats: int, steps: int | None, driver: Path, work: Path) -> list[dict]:
    task, built = models(name, steps)
    callables, folders = {}, {}
    for kind, module in built.items():
        folders[kind] = lumos_fx.export(module, work / name / kind, overwrite=True, formats=("onnx", "aoti"))
        for runtime, fn in _runtimes(module, folders[kind]).items():
            callables[f"{runtime}/{kind}"] = fn
    flops = {kind: count_flops(m, _inputs(task, 1)) for kind, m in built.items()}
    rows = []
    for batch in batches:
        inputs = _inputs(task, batch)
        n = max(5, repeats * 64 // max(batch, 64))
        times = interleaved_latency(callables, inputs, n)
        data = work / name / f"inputs_{batch}.bin"
        write_tensor(data, inputs[0])
        rounds = {kind: [] for kind in built}
        for _ in range(3):
            for kind in built:
                rounds[kind].append(cpp_driver.time_calls(driver, folders[kind] / "model_aoti.pt2", data, n))
        times |= {f"c++/{kind}": statistics.median(t) for kind, t in rounds.items()}
        for runtime in ("eager", "compile", "aoti", "c++", "onnxruntime"):
            dense, pruned = times[f"{runtime}/dense"], times[f"{runtime}/pruned"]
            rows.append({"workload": name, "batch": batch, "runtime": runtime, "dense_ms": dense * 1e3,
                         "pruned_ms": pruned * 1e3, "speedup": dense / pruned,
                         "flop_ratio": flops["dense"] / flops["pruned"], "repeats": n})
    return rows


def markdown(rows: list[dict]) -> str:
    return report.md_table(
        ["workload", "batch", "runtime", "dense ms", "pruned ms", "speedup", "FLOP ratio"],
        [[r["workload"], r["batch"], r["runtime"], f"{r['dense_ms']:.4f}", f"{r['pruned_ms']:.4f}",
          f"{r['speedup']:.2f}x", f"{r['flop_ratio']:.1f}x"] for r in rows])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["cfd", "dms"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64, 4096])
    parser.add_argument("--repeats", type=int, default=200, help="interleaved calls at batch 64 or less")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the cpu scale's)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        driver = cpp_driver.build(work / "build")
        rows = [row for name in args.workloads for row in run(name, args.batches, args.repeats, args.steps,
                                                              driver, work)]
    preamble = (f"`python -m benchmarks.deploy {' '.join(argv or [])}`".replace(" `", "`") + ": "
                f"{torch.get_num_threads()} torch threads, {torch.__version__}. Dense: the same network with "
                "every gate open, cut by prune() (nothing goes). Python runtimes: medians of interleaved calls; "
                "C++: the driver's own median over its calls, dense and pruned alternating, the median of 3 "
                "rounds. The paper's CPU speedups: 7.6x on average, 68.8x on CFD.")
    report.write_table(out, "deploy", rows, "Deploy: pruned vs dense latency per runtime", preamble, markdown(rows))
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
