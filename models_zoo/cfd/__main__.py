"""The main job (``make demo``): train the CFD flux surrogate with and without lumos_fx,
prune, compare, export.

    python -m models_zoo.cfd --out out/cfd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import lumos_fx
from lumos_fx.export_formats import FILES
from lumos_fx.report import count_flops

from ..measure import interleaved_latency
from ..surrogates import fit_pair, split
from ..tensor_file import write_tensor
from ..training import r2_score
from . import data
from .workload import WORKLOAD


def _times(before: float, after: float, digits: int = 1) -> str:
    return f"{before / after:.{digits}f}x" if after else "all"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/cfd", help="folder for the exported model and results")
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--steps", type=int, default=2500, help="training steps of each run")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--lam", type=float, default=WORKLOAD.lam, help="the benchmark's lam (see workload.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="*", default=["aoti"], choices=("pt2", "onnx", "aoti"),
                        help="files for other runtimes beside model.py (aoti: the C++ driver's, examples/cpp)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    d = split("cfd", args.samples, args.seed)
    x_test, y_test = d.x_test, d.y_test
    print(f"CFD flux surrogate: {len(d.x)} training faces, {len(x_test)} test faces, "
          f"{len(data.FEATURES)} inputs ({len(data.INFORMATIVE)} informative), {len(data.TARGETS)} fluxes")
    dense, wrapped, pruned = fit_pair("cfd", d, steps=args.steps, lam=args.lam, seed=args.seed,
                                      hidden=args.hidden, depth=args.depth)
    report = lumos_fx.summary(pruned)
    print(report)

    with torch.no_grad():
        r2_dense, r2_pruned = r2_score(dense(x_test), y_test), r2_score(pruned(x_test), y_test)
        gated_error = (pruned(x_test) - wrapped.eval()(x_test)).abs().max().item()
    params = {"dense": sum(p.numel() for p in dense.parameters()), "pruned": sum(p.numel() for p in pruned.parameters())}
    flops = {"dense": count_flops(dense, (x_test[:1],)), "pruned": count_flops(pruned, (x_test[:1],))}
    latency = {
        1: interleaved_latency({"dense": dense, "pruned": pruned}, (x_test[:1],), repeats=400),
        4096: interleaved_latency({"dense": dense, "pruned": pruned}, (x_test[:4096],), repeats=40),
    }
    kept = set(report.features["x"][0])
    folder = lumos_fx.export(pruned, out / "model", overwrite=True, formats=args.formats)
    # The C++ driver's input (examples/cpp): the test faces, and what Python computes of them.
    write_tensor(out / "faces.bin", x_test)
    with torch.no_grad():
        write_tensor(out / "fluxes_python.bin", pruned(x_test))

    print(f"\nR^2 on test faces     dense {r2_dense:.4f}   lumos-pruned {r2_pruned:.4f}"
          f"   (pruned vs gated model: max |diff| {gated_error:.2e})")
    print(f"parameters            dense {params['dense']:,}   pruned {params['pruned']:,}"
          f"   ({_times(params['dense'], params['pruned'])} fewer)")
    print(f"FLOPs per sample      dense {flops['dense']:,}   pruned {flops['pruned']:,}"
          f"   ({_times(flops['dense'], flops['pruned'])} fewer)")
    for batch, t in latency.items():
        print(f"CPU latency batch {batch:<4}  dense {t['dense'] * 1e6:9.1f} us   pruned {t['pruned'] * 1e6:9.1f} us"
              f"   ({_times(t['dense'], t['pruned'], 2)} faster, median of interleaved runs)")
    print("\ninput features (truth -> kept by lumos_fx):")
    for name in data.FEATURES:
        truth = "informative" if name in data.INFORMATIVE else ("duplicate of rho_L" if name == data.DUPLICATE
                                                                 else "no information")
        print(f"  {name:<11} {truth:<19} {'kept' if name in kept else 'removed'}")
    informative_kept = [n for n in data.INFORMATIVE if n in kept or (n == "rho_L" and data.DUPLICATE in kept)]
    junk_kept = [n for n in data.UNINFORMATIVE if n in kept]
    print(f"informative kept: {len(informative_kept)}/{len(data.INFORMATIVE)} (rho_L counts when its copy is kept); "
          f"uninformative kept: {len(junk_kept)}/{len(data.UNINFORMATIVE)}; "
          f"rho_L and its copy both kept: {'rho_L' in kept and data.DUPLICATE in kept}")
    print(f"\nexported pruned model: {folder / 'model.py'} (weights: {folder / 'weights.pt'}"
          + "".join(f", {FILES[f]}" for f in args.formats) + f"); test faces for examples/cpp: {out / 'faces.bin'}")

    results = {
        "r2": {"dense": r2_dense, "pruned": r2_pruned}, "params": params, "flops_per_sample": flops,
        "latency_s": {str(b): t for b, t in latency.items()}, "kept_features": sorted(kept),
        "max_abs_diff_pruned_vs_gated": gated_error, "export": str(folder),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "summary.txt").write_text(str(report) + "\n")
    return results


if __name__ == "__main__":
    main()
