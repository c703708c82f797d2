"""The benchmark's outputs: results as JSON, a Markdown table, and the paper's Fig. 9 and
Fig. 10 as matplotlib plots."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import NamedTuple

from ..workload import METRICS
from .run import KD_FINETUNE
from .seeds import combined, pm


def write_json(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows, indent=2) + "\n")


def md_table(columns: list[str], cells: list[list]) -> str:
    """A Markdown table: a header of `columns`, then one row per list of `cells` (as str())."""
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_table(out: Path, stem: str, rows: list[dict], title: str, preamble: str, table: str) -> None:
    """``<stem>.json`` (the rows) and ``<stem>.md`` (a title, how it was measured, the table) in `out`."""
    write_json(out / f"{stem}.json", rows)
    (out / f"{stem}.md").write_text(f"# {title}\n\n{preamble}\n\n{table}")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def _budget(row: dict) -> str:
    """The row's Lumos setting: its budget (kept fraction of prunable parameters) or its lam."""
    if row.get("target") is not None:
        return f"keep {row['target']:.0%}"
    return f"lam {row['lam']:g}" if row.get("lam") is not None else "lam 1"


def with_ratios(row: dict) -> dict:
    """`row` with the ratios the tables show: parameters and FLOPs cut, CPU speedups."""
    return row | {"params_cut": 1 - row["params_lumos"] / row["params_dense"],
                  "flops_cut": 1 - row["flops_lumos"] / row["flops_dense"],
                  "speedup_b1": _ratio(row["latency_b1_dense_ms"], row["latency_b1_lumos_ms"]),
                  "speedup_large": _ratio(row["latency_large_dense_ms"], row["latency_large_lumos_ms"])}


def markdown(rows: list[dict], baselines: list[dict], header: str) -> str:
    """The tables of the benchmark; a workload run with several seeds is one row of means ± std."""
    rows = combined([with_ratios(r) for r in rows])
    raw_baselines, baselines = baselines, combined(baselines, ("workload", "method"))
    lines = [f"# lumos_fx benchmark\n\n{header}\n", "## Dense vs Lumos-pruned\n",
             ("| workload | model | metric | dense | lumos | budget | params dense | params lumos | params cut "
              "| FLOPs cut | CPU speedup b1 | CPU speedup large | peak mem dense MB | peak mem lumos MB "
              "| train s dense | train s lumos | features kept |"),
             "|---" * 17 + "|"]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['family']} | {r['metric']} | {pm(r, 'metric_dense', '.4f')} "
            f"| {pm(r, 'metric_lumos', '.4f')} | {_budget(r)} | {r['params_dense']:,.0f} | {pm(r, 'params_lumos', ',.0f')} "
            f"| {pm(r, 'params_cut', '.1f', 100, '%')} | {pm(r, 'flops_cut', '.1f', 100, '%')} "
            f"| {pm(r, 'speedup_b1', '.2f', suffix='x')} "
            f"| {pm(r, 'speedup_large', '.2f', suffix='x')} (batch {r['large_batch']:.0f}) "
            f"| {r['peak_memory_dense_mb']:.1f} | {r['peak_memory_lumos_mb']:.1f} "
            f"| {r['train_time_dense_s']:.0f} | {r['train_time_lumos_s']:.0f} "
            f"| {pm(r, 'features_kept', '.3g')}/{r['features_total']:.0f} |")
    if rows:
        lines.append("\nAverages over workloads: parameter reduction "
                     f"{statistics.mean(r['params_cut'] for r in rows):.1%}, FLOPs reduction "
                     f"{statistics.mean(r['flops_cut'] for r in rows):.1%}, CPU speedup batch 1 "
                     f"{statistics.mean(r['speedup_b1'] for r in rows):.2f}x, large batch "
                     f"{statistics.mean(r['speedup_large'] for r in rows):.2f}x.")
        if any(len(r["seeds"]) > 1 for r in rows):
            lines.append(f"Means ± sample standard deviations over seeds {', '.join(map(str, rows[0]['seeds']))}: "
                         "every seed draws its own data, initial weights, batch order and gate noise.")
    if rows:
        lines += ["\n## How much of the FLOP cut the hardware realised\n", _realised(rows)]
    if baselines:
        standings = {name: standing(raw_baselines, name) for name in dict.fromkeys(b["workload"] for b in baselines)}
        lines += ["\n## Baselines at Lumos's parameter count\n",
                  "| workload | metric | " + " | ".join(METHODS) + " | lumos+ft against the best baseline |",
                  "|---" * (3 + len(METHODS)) + "|"]
        for name in dict.fromkeys(b["workload"] for b in baselines):
            cells = []
            for method in METHODS:
                b = next((b for b in baselines if b["workload"] == name and b["method"] == method), None)
                cells.append("n/a" if b is None else f"skipped ({b['skipped'][:60]})" if "skipped" in b
                             else f"{pm(b, 'metric_value', '.4f')} ({b['params']:,.0f}{'' if b['within_budget'] else ' †'})")
            metric = next(b["metric"] for b in baselines if b["workload"] == name and "metric" in b)
            lines.append(f"| {name} | {metric} | " + " | ".join(cells) + f" | {standings[name]} |")
        lines.append("\nParameters in brackets. `lumos`: straight out of one training run. Every other method had "
                     "the same training budget, 1.5 times the steps of one run: `lumos+ft` is the Lumos-pruned model "
                     "fine-tuned for half the steps; the baselines are the dense model, trained for the steps, cut "
                     "and fine-tuned for half of them; `lumos+kd` is that dense model gated to the Lumos budget and "
                     f"trained for half the steps with the dense model as its teacher (its last {KD_FINETUNE:.0%} "
                     "with the gates frozen); `oto` spends them on HESSO training from the dense model. † the "
                     "method could not cut the model to within 5% of Lumos's count.")
        counts = {kind: sum(v.kind == kind for v in standings.values()) for kind in ("best", "tied", "behind")}
        lines.append(f"\n`lumos+ft` against the best baseline (l1, slimming, depgraph, oto) at its count: best on "
                     f"{counts['best']}, tied on {counts['tied']} (behind by less than one standard deviation of the "
                     f"difference, √(σ²ft + σ²baseline), and at or above it on some seed), behind on {counts['behind']} of {len(standings)} workloads.")
    surrogate = [r for r in rows if "informative_kept" in r]
    if surrogate:
        lines += ["\n## Feature selection\n", "| workload | inputs | kept | informative kept | uninformative kept |",
                  "|---|---|---|---|---|"]
        for r in surrogate:
            informative = [len(k) for k in r.get("informative_kept_by_seed", [r["informative_kept"]])]
            junk = r.get("uninformative_kept_by_seed", [r["uninformative_kept"]])
            lines.append(f"| {r['workload']} | {r['features_total']:.0f} | {pm(r, 'features_kept', '.3g')} "
                         f"| {', '.join(map(str, informative))} | "
                         f"{'; '.join(', '.join(j) or 'none' for j in junk)} |")
        if any(len(r["seeds"]) > 1 for r in surrogate):
            lines.append("\nInformative and uninformative kept: one entry per seed.")
    return "\n".join(lines) + "\n"


def _realised(rows: list[dict]) -> str:
    """Per workload, the FLOP ratio (dense over pruned) beside the measured CPU speedups and
    the share of it each realised (speedup over FLOP ratio: 100% is a latency that fell with
    the FLOPs)."""
    cells = []
    for r in rows:
        flop_ratio = _ratio(r["flops_dense"], r["flops_lumos"])
        cells.append([r["workload"], f"{flop_ratio:.2f}x", pm(r, "speedup_b1", ".2f", suffix="x"),
                      f"{r['speedup_b1'] / flop_ratio:.0%}",
                      f"{pm(r, 'speedup_large', '.2f', suffix='x')} (batch {r['large_batch']:.0f})",
                      f"{r['speedup_large'] / flop_ratio:.0%}"])
    return md_table(["workload", "FLOP ratio", "CPU speedup b1", "realised b1", "CPU speedup large", "realised large"],
                    cells).rstrip("\n")


METHODS = ("lumos", "lumos+ft", "lumos+kd", "l1", "slimming", "depgraph", "oto")
BASELINES = ("l1", "slimming", "depgraph", "oto")


class Standing(NamedTuple):
    """Where ``lumos+ft`` stands on a workload: ``kind`` is ``best``, ``tied``, ``behind`` or
    ``none`` (no baseline at its count); ``detail`` says against what and by how much."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.kind != "none" else self.detail


def standing(baselines: list[dict], workload: str) -> Standing:
    """``lumos+ft`` of `workload` against the best baseline (by the mean over seeds) that cut
    the model to Lumos's count, from the rows of every seed: ``best`` where its mean is at
    least that baseline's; ``tied`` where it is behind by less than
    :math:`\\sqrt{\\sigma_{ft}^2 + \\sigma_b^2}` (one standard deviation of the difference
    of the means) and at or above it on some seed; else ``behind``. The seeds at or above the
    baseline's same seed are counted beside."""
    raw = [b for b in baselines if b["workload"] == workload and "metric_value" in b]
    rows = {b["method"]: b for b in combined(raw, ("workload", "method"))}
    ft = rows.get("lumos+ft")
    rivals = [rows[m] for m in BASELINES if m in rows and rows[m]["within_budget"]]
    if ft is None or not rivals:
        return Standing("none", "no baseline at its count")
    sign = 1.0 if METRICS[ft["metric"]][1] else -1.0
    best = max(rivals, key=lambda b: sign * b["metric_value"])
    by_seed = {(b["method"], b.get("seed", 0)): b["metric_value"] for b in raw}
    seeds = [s for s in ft["seeds"] if (best["method"], s) in by_seed]
    won = sum(sign * (by_seed["lumos+ft", s] - by_seed[best["method"], s]) >= 0 for s in seeds)
    gap = sign * (best["metric_value"] - ft["metric_value"]) + 0.0  # + 0.0: no "-0.0000" for a tie
    noise = math.hypot(ft["metric_value_std"], best["metric_value_std"])
    kind = "best" if gap <= 0 else "tied" if gap < noise and won else "behind"
    return Standing(kind, f"{0.0 - gap:+.4f} against {best['method']}, σ {noise:.4f}; {won}/{len(seeds)} seeds at or above")


def fig9(rows: list[dict], path: Path) -> None:
    """Per workload, dense vs Lumos: CPU latency (batch 1), the metric, parameters, FLOPs;
    with several seeds, their means with error bars of one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = combined(rows)
    names = [r["workload"] for r in rows]
    panels = [("CPU latency, batch 1 (ms)", "latency_b1_{}_ms", True), ("metric", "metric_{}", False),
              ("parameters", "params_{}", True), ("FLOPs per sample", "flops_{}", True)]
    fig, axes = plt.subplots(2, 2, figsize=(14, 8))
    x = np.arange(len(rows))
    for ax, (title, key, log) in zip(axes.flat, panels):
        for k, (which, colour) in enumerate((("dense", "#999999"), ("lumos", "#d62728"))):
            ax.bar(x + (k - 0.5) * 0.4, [r[key.format(which)] for r in rows], 0.4, label=which, color=colour,
                   yerr=[r[key.format(which) + "_std"] for r in rows], capsize=2)
        ax.set_title(title)
        ax.set_xticks(x, [f"{n}\n({r['metric']})" if title == "metric" else n for n, r in zip(names, rows)],
                      rotation=45, ha="right", fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig10(rows: list[dict], correlations: dict[str, dict[str, list[float]]], feature_names: dict, path: Path) -> None:
    """Per input feature of every workload with named features: its largest |Pearson r| with
    the outputs, kept (filled) or removed (hollow) by Lumos (the first seed's run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in combined(rows) if correlations.get(r["workload"])]
    if not shown:
        return
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6), squeeze=False)
    for ax, r in zip(axes[0], shown):
        (name, corr), = correlations[r["workload"]].items()
        names = feature_names[r["workload"]][name]
        kept = set(r["features_kept_names"])
        for i, (f, c) in enumerate(zip(names, corr)):
            on = f in kept
            ax.scatter(i, c, s=40, facecolors="#d62728" if on else "none", edgecolors="#d62728" if on else "#555555")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_title(r["workload"])
        ax.set_ylabel("max |Pearson r| with outputs")
    fig.suptitle("input features: kept (filled) vs removed (hollow)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
