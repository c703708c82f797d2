"""Which zoo models export in each format: every workload's model at the smoke scale, half of
every group's units closed at random, pruned and exported with ``formats=("pt2", "onnx",
"aoti")``; the table gives what ``formats.json`` says (written and checked, or the error).

    python -m benchmarks.zoo_formats [--workloads ...] [--out results]

Writes ``zoo_formats.json`` and ``zoo_formats.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import lumos_fx
from lumos_fx.export_formats import MANIFEST
from models_zoo.bench import report
from models_zoo.bench.round_to import close_at_random
from models_zoo.registry import NAMES, get

FORMATS = ("pt2", "onnx", "aoti")


def run(name: str, folder: Path, seed: int = 0) -> dict:
    workload = get(name)
    scale = workload.scales["smoke"]
    task = workload.task(scale, seed)
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example)
    close_at_random(wrapped, 0.5, seed)
    pruned = lumos_fx.prune(wrapped)
    try:
        lumos_fx.export(pruned, folder, formats=FORMATS)
    except lumos_fx.ExportError:
        pass  # formats.json says which format failed and why
    written = json.loads((folder / MANIFEST).read_text())
    return {"workload": name, "family": workload.family, "batch": written["batch"],
            "dynamic": {i["name"]: i["dynamic"] for i in written["inputs"]},
            **{fmt: written["formats"][fmt] for fmt in FORMATS}}


def _cell(entry: dict) -> str:
    if "error" in entry:
        return "no: " + entry["error"].replace("|", "/")[:160]
    return f"yes (checked at batch {', '.join(map(str, entry['batch_sizes']))})"


def markdown(rows: list[dict]) -> str:
    return report.md_table(["workload", "model", "batch", *FORMATS],
                           [[r["workload"], r["family"], r["batch"], *(_cell(r[f]) for f in FORMATS)] for r in rows])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(name, Path(tmp) / name) for name in args.workloads]
    report.write_table(out, "zoo_formats", rows, "Which zoo models export in each format",
                       f"`python -m benchmarks.zoo_formats`: torch {torch.__version__}; every model at the smoke "
                       "scale with half of every group's units closed at random, pruned and exported with "
                       "`formats=(\"pt2\", \"onnx\", \"aoti\")`.", markdown(rows))
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
