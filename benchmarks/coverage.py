"""External coverage benchmark: lumos_fx on models from other libraries (issue 18, item 6).

For every model of ``benchmarks/coverage_models.py`` (small configs, random weights, no
downloads) it checks, each model in its own process with a time limit:

1. ``instrument(model, example_inputs)`` equals the model at init in eval mode (rel err < 1e-4);
2. about 30% of every gate's units are closed at random (log_alpha -10 closed, +10 open);
3. ``prune(wrapped)`` runs;
4. the pruned model equals the gated one (``wrapped.eval()``), rel err < 1e-3, on the
   example and on the other inputs the builder gives (another batch size, another spatial
   size or sequence length) wherever the original model accepts them;
5. parameters were cut (otherwise the model is *refused*, with the reason ``summary()`` gives);
6. ``export()`` then, in a fresh process, ``import model; model.load()`` matches the pruned model.

Every exception is caught and recorded with its type, its first line, the stage it
happened at and where it came from (the innermost frame of the model's library, and of
lumos_fx). Results go to ``<out>/coverage.md`` and ``<out>/coverage.json``.

    python -m benchmarks.coverage                       # every model (make coverage)
    python -m benchmarks.coverage --only timm monai     # some libraries
    python -m benchmarks.coverage --models resnet18 pyg/GCN
    python -m benchmarks.coverage --list                # the model list
    python -m benchmarks.coverage --timeout 120 --jobs 2 --out results

A run with ``--only``/``--models`` replaces those models' rows in an existing
``coverage.json`` and rewrites both files from the merged set (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import datetime
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXPORTED = "pruned exactly + exported"
PRUNED = "pruned exactly"  # shown as "pruned exactly (export failed: reason)"
REFUSED = "refused"
FAILED = "failed"
SKIPPED = "library not installed"
STATUSES = (EXPORTED, PRUNED, REFUSED, FAILED, SKIPPED)

INIT_TOL = 1e-4    # instrumented vs original at init
PRUNE_TOL = 1e-3   # pruned vs gated
EXPORT_TOL = 1e-4  # exported-and-loaded vs pruned
CLOSED_FRACTION = 0.3


# --------------------------------------------------------------------------- helpers

def count_params(module) -> int:
    """Parameters of a model, lumos_fx's gates left out."""
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith("lumos_gates."))


def leaves(obj) -> list:
    """The tensors of a (nested) output: tensors, dicts (HF ModelOutput), lists, tuples, dataclasses."""
    import dataclasses

    import torch
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in leaves(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in leaves(v)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in leaves(getattr(obj, f.name))]
    if hasattr(obj, "to_tuple"):  # a ModelOutput that is no dict
        return leaves(obj.to_tuple())
    return []


def max_rel_error(a, b) -> float:
    """Max over output tensors of max|a - b| / max|b| (as tests/support.py's max_rel_error); b is the reference."""
    import torch
    la, lb = leaves(a), leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"outputs differ in structure: {len(la)} tensors vs {len(lb)}")
    worst = 0.0
    for x, y in zip(la, lb, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"output shapes differ: {tuple(x.shape)} where the reference has {tuple(y.shape)}")
        if x.numel() == 0:
            continue
        x, y = x.detach().double(), y.detach().double()
        fx, fy = torch.isfinite(x), torch.isfinite(y)
        if not (fx.all() and fy.all()):  # equal only where both hold the same inf / nan
            if not (torch.equal(fx, fy) and torch.equal(x[~fx].nan_to_num(0.0), y[~fy].nan_to_num(0.0))):
                return float("inf")
            x, y = x[fx], y[fy]
            if x.numel() == 0:
                continue
        scale = y.abs().max().item()
        worst = max(worst, (x - y).abs().max().item() / max(scale, 1e-6))
    return worst


def close_gates(wrapped, fraction: float = CLOSED_FRACTION, seed: int = 0) -> tuple[int, int]:
    """Close round(fraction * n) units of every gate at random (log_alpha -10), open the rest
    (+10); at least one unit of each gate stays open. Returns (units, closed)."""
    import torch

    import lumos_fx
    gen = torch.Generator().manual_seed(seed)
    units = closed = 0
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            la = gate.log_alpha
            n = la.numel()
            k = min(int(round(fraction * n)), n - 1)
            flat = torch.full((n,), 10.0)
            flat[torch.randperm(n, generator=gen)[:k]] = -10.0
            la.copy_(flat.view(la.shape).to(la))
            units, closed = units + n, closed + k
    return units, closed


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _frame_kind(filename: str) -> str:
    f = filename.replace("\\", "/")
    if "/lumos_fx/" in f:
        return "lumos_fx"
    if "/benchmarks/" in f and "site-packages" not in f:
        return "benchmark"
    if re.search(r"/(site|dist)-packages/torch/|/lib/python3[^/]*/(?!site-packages)", f) or f.startswith("<"):
        return "torch"
    return "library"


def where(exc: BaseException) -> dict:
    """Where an exception came from. ``where``: the innermost frame in the model's library
    (torch, lumos_fx and the benchmark left out), looked for from the innermost exception of
    the ``raise ... from`` chain outwards, else the innermost frame; ``lumos_where``: the
    innermost lumos_fx frame of the exception raised; ``cause``: the chain's innermost
    exception, where there is one."""
    chain = []
    e = exc
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__  # `raise ... from`; an implicit __context__ is what was being handled, not the cause
    out = {}
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        if _frame_kind(fr.filename) == "lumos_fx":
            out["lumos_where"] = _loc(fr)
            break
    for e in reversed(chain):
        lib = [fr for fr in traceback.extract_tb(e.__traceback__) if _frame_kind(fr.filename) == "library"]
        if lib:
            out["where"] = _loc(lib[-1])
            break
    root = chain[-1]
    frames = traceback.extract_tb(root.__traceback__)
    if "where" not in out:  # lumos_fx's own errors name the model's line in their message
        for e in chain:
            m = re.search(r"(/\S+?\.py):(\d+)", str(e))
            if m and _frame_kind(m.group(1)) == "library":
                out["where"] = f"{_short(m.group(1))}:{m.group(2)} (named in the message)"
                break
    if "where" not in out and frames:
        out["where"] = _loc(frames[-1])
    if len(chain) > 1:
        out["cause"] = f"{type(root).__name__}: {first_line(root)}"
    out["frames"] = [_loc(fr) for fr in frames[-8:]]
    return out


def _traceback_text(exc: BaseException, limit: int = 8000) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text if len(text) <= limit else text[:limit // 2] + "\n[...]\n" + text[-limit // 2:]


def _loc(fr) -> str:
    return f"{_short(fr.filename)}:{fr.lineno} ({fr.name})"


def _short(filename: str) -> str:
    f = filename.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in f:
            return f.split(marker, 1)[1]
    with contextlib.suppress(ValueError):
        return str(Path(f).resolve().relative_to(ROOT))
    return f


def _reasons(kept_whole: dict[str, str], limit: int = 3) -> str:
    """The most common reasons summary() gives, most frequent first."""
    counts = collections.Counter(kept_whole.values())
    parts = [f"{why}" + (f" (x{n})" if n > 1 else "") for why, n in counts.most_common(limit)]
    more = len(counts) - limit
    return "; ".join(parts) + (f"; and {more} other reasons" if more > 0 else "")


# --------------------------------------------------------------------------- one model

class Stage:
    """Records which stage a model is at (for errors and time-outs)."""

    def __init__(self, record: dict, progress=None) -> None:
        self.record, self.progress = record, progress

    def __call__(self, name: str) -> None:
        self.record["stage"] = name
        if self.progress is not None:
            self.progress(self.record)


def check_model(model, example_inputs, other_inputs=None, *, seed: int = 0, export: bool = True,
                export_timeout: float = 180.0, progress=None, record: dict | None = None) -> dict:
    """Run the six checks on one model; never raises. Returns the record (status, reason, ...).

    `other_inputs`: None, or {label: inputs tuple} to check besides the example (each is
    first run on the original model; one the original rejects is noted and skipped).
    """
    import torch

    import lumos_fx
    rec = record if record is not None else {}
    rec.update(status=None, reason="", checks=[], init_rel_err=None, max_rel_err=None,
               params_before=None, params_after=None)
    stage = Stage(rec, progress)
    example_inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    others = dict(other_inputs or {})
    t0 = time.perf_counter()
    try:
        model = model.eval()
        rec["params_before"] = count_params(model)
        stage("original")
        with torch.no_grad():
            ref0 = model(*copy.deepcopy(example_inputs))

        stage("instrument")
        wrapped = lumos_fx.instrument(model, example_inputs=example_inputs)
        gates = lumos_fx.gates(wrapped)
        rec["gates"] = len(gates)

        stage("instrumented == original")
        with torch.no_grad():
            out0 = wrapped.eval()(*copy.deepcopy(example_inputs))
        rec["init_rel_err"] = err = max_rel_error(out0, ref0)
        if not err < INIT_TOL:
            raise AssertionError(f"instrumented model differs from the original at init: rel err {err:.3g}")

        if not gates:
            stage("summary")
            s = lumos_fx.summary(wrapped)
            rec["kept_whole"] = dict(list(s.kept_whole.items())[:50])
            rec["status"] = REFUSED
            rec["reason"] = "no gates: " + (_reasons(s.kept_whole) or "no prunable group")
            return rec

        stage("close gates")
        rec["units"], rec["closed"] = close_gates(wrapped, CLOSED_FRACTION, seed)

        stage("prune")
        pruned = lumos_fx.prune(wrapped)
        rec["params_after"] = count_params(pruned)

        stage("summary")
        s = lumos_fx.summary(pruned)
        rec["kept_whole"] = dict(list(s.kept_whole.items())[:50])
        rec["n_kept_whole"] = len(s.kept_whole)
        rec["assumptions"] = list(s.assumptions)[:20]

        verified = []  # (label, inputs, pruned output) the pruned model was checked on
        worst = 0.0
        for label, inputs in [("example", example_inputs)] + list(others.items()):
            inputs = inputs if isinstance(inputs, tuple) else (inputs,)
            stage(f"gated model on {label}")
            check = {"input": label}
            rec["checks"].append(check)
            if label != "example":
                try:
                    with torch.no_grad():
                        model(*copy.deepcopy(inputs))
                except Exception as e:  # the original model does not take it: nothing to check
                    check["skipped"] = f"original rejects it: {type(e).__name__}: {first_line(e)}"
                    continue
            with torch.no_grad():
                ref = wrapped.eval()(*copy.deepcopy(inputs))
                stage(f"pruned == gated on {label}")
                out = pruned(*copy.deepcopy(inputs))
            check["rel_err"] = err = max_rel_error(out, ref)
            worst = max(worst, err)
            rec["max_rel_err"] = worst
            if not err < PRUNE_TOL:
                raise AssertionError(f"pruned model differs from the gated one on the {label} input: rel err {err:.3g}")
            verified.append((label, inputs, out))

        if not rec["params_after"] < rec["params_before"]:
            rec["status"] = REFUSED
            rec["reason"] = _reasons(s.kept_whole) or "no parameter was cut (no group kept whole)"
            return rec

        rec["status"] = EXPORTED
        if export:
            stage("export")
            try:
                rec["export_rel_err"] = _export_roundtrip(pruned, verified, export_timeout)
            except Exception as e:
                rec["status"] = PRUNED
                rec["reason"] = f"export failed: {type(e).__name__}: {first_line(e)}"
                rec["error_type"], rec["error"] = type(e).__name__, first_line(e)
                rec.update(where(e))
                rec["export_stage"] = rec["stage"]
        else:
            rec["status"] = PRUNED
            rec["reason"] = "export not run"
        stage("done")
    except Exception as e:
        rec["status"] = FAILED
        rec["error_type"], rec["error"] = type(e).__name__, first_line(e)
        rec["reason"] = f"{type(e).__name__}: {first_line(e)}"
        rec.update(where(e))
        rec["traceback"] = _traceback_text(e)
    finally:
        rec["time_s"] = round(time.perf_counter() - t0, 3)
    return rec


_LOADER = r"""
import sys, torch
folder, inputs_file, out_file = sys.argv[1:4]
sys.path.insert(0, folder)
import model
net = model.load()
inputs = torch.load(inputs_file, weights_only=False)
with torch.no_grad():
    outs = [net(*x) for x in inputs]
torch.save(outs, out_file)
"""


def _export_roundtrip(pruned, verified, timeout: float) -> float:
    """export(), then load the folder in a fresh process and compare on the verified inputs."""
    import torch

    import lumos_fx
    with tempfile.TemporaryDirectory(prefix="lumos_cov_") as tmp:
        folder = Path(tmp) / "model"
        lumos_fx.export(pruned, folder)
        torch.save([inp for _, inp, _ in verified], Path(tmp) / "inputs.pt")
        proc = subprocess.run([sys.executable, "-c", _LOADER, str(folder), str(Path(tmp) / "inputs.pt"),
                               str(Path(tmp) / "outs.pt")], capture_output=True, text=True,
                              timeout=timeout, cwd=tmp)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit code {proc.returncode}"
            raise RuntimeError(f"loading the export in a fresh process failed: {last}")
        outs = torch.load(Path(tmp) / "outs.pt", weights_only=False)
    worst = 0.0
    for (label, _, expected), got in zip(verified, outs, strict=True):
        err = max_rel_error(got, expected)
        worst = max(worst, err)
        if not err < EXPORT_TOL:
            raise AssertionError(f"the loaded export differs from the pruned model on the {label} input: "
                                 f"rel err {err:.3g}")
    return worst


# --------------------------------------------------------------------------- worker

def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_worker(key: str, record_file: str, seed: int, export: bool, threads: int | None) -> None:
    """Build and check one model; writes its record (and progress on the way) to record_file."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from benchmarks.coverage_models import LIBRARIES, by_key
    case = by_key()[key]
    rec = {"library": case.library, "model": case.name, "stage": "import"}

    def write(r):
        tmp = record_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(r, f, default=str)
        os.replace(tmp, record_file)

    write(rec)
    t0 = time.perf_counter()
    import torch
    if threads:
        torch.set_num_threads(threads)
    rec["torch"] = torch.__version__
    lib = LIBRARIES[case.library]
    try:
        mods = [__import__(m) for m in lib.modules]
        rec["library_version"] = getattr(mods[0], "__version__", "?")
    except Exception as e:
        rec.update(status=SKIPPED, reason=f"library not installed: {type(e).__name__}: {first_line(e)}",
                   time_s=round(time.perf_counter() - t0, 3))
        write(rec)
        return
    rec["stage"] = "build"
    write(rec)
    try:
        seed_everything(seed)
        built = case.build()
        model, example, others = (tuple(built) + (None,))[:3]
    except Exception as e:
        rec.update(status=FAILED, error_type=type(e).__name__, error=first_line(e),
                   reason=f"building the model failed: {type(e).__name__}: {first_line(e)}",
                   traceback=_traceback_text(e), time_s=round(time.perf_counter() - t0, 3), **where(e))
        write(rec)
        return
    seed_everything(seed)
    check_model(model, example, others, seed=seed, export=export, progress=write, record=rec)
    write(rec)


# --------------------------------------------------------------------------- driver

def _run_one(case, args, logdir: Path) -> dict:
    with tempfile.NamedTemporaryFile(prefix="cov_", suffix=".json", delete=False) as f:
        record_file = f.name
    cmd = [sys.executable, "-m", "benchmarks.coverage", "--worker", case.key, "--record", record_file,
           "--seed", str(args.seed)]
    if args.no_export:
        cmd.append("--no-export")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    timeout = case.timeout or args.timeout
    log = logdir / (re.sub(r"[^A-Za-z0-9_.+-]+", "_", case.key.replace("/", "__")).strip("_") + ".log")
    t0 = time.perf_counter()
    rc, timed_out = None, False
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # the worker and its export-load child, started by us
            proc.wait()
    wall = time.perf_counter() - t0
    rec = {"library": case.library, "model": case.name, "stage": "start"}
    with contextlib.suppress(Exception):
        rec = json.loads(Path(record_file).read_text())
    with contextlib.suppress(OSError):
        os.unlink(record_file)
    if timed_out:
        rec.update(status=FAILED, error_type="Timeout", error=f"no result within {timeout:g} s",
                   reason=f"Timeout: no result within {timeout:g} s (at stage: {rec.get('stage')})")
        rec.setdefault("time_s", round(wall, 3))
    elif rec.get("status") in (None, "running"):
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or [""]
        rec.update(status=FAILED, error_type="WorkerCrash", error=f"worker exited with code {rc}: {tail[0][:200]}",
                   reason=f"WorkerCrash: worker exited with code {rc} at stage {rec.get('stage')}: {tail[0][:200]}")
    rec["wall_s"] = round(wall, 3)
    rec["run_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    return rec


def select(cases, only=None, models=None):
    out = list(cases)
    if only:
        from benchmarks.coverage_models import library_name
        libs = {library_name(x) or x.lower() for x in only}
        out = [c for c in out if c.library in libs]
    if models:
        import fnmatch
        pats = [x.lower() for x in models]
        out = [c for c in out if any(fnmatch.fnmatchcase(c.name.lower(), p) or fnmatch.fnmatchcase(c.key.lower(), p)
                                     for p in pats)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.coverage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="LIB", help="only these libraries (see --list)")
    ap.add_argument("--models", nargs="+", metavar="NAME",
                    help="only these models: name or library/name, shell patterns allowed ('timm/vit*')")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per model (default 300)")
    ap.add_argument("--out", default="results", help="folder for coverage.md / coverage.json (default results)")
    ap.add_argument("--logs", default=str(ROOT / "out" / "coverage_logs"),
                    help="folder for each model's stdout/stderr (default out/coverage_logs)")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per model (default: cores / jobs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-export", action="store_true", help="skip export() and the fresh-process load")
    ap.add_argument("--fresh", action="store_true", help="with --only/--models: drop earlier rows instead of merging")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("--render", action="store_true", help="rewrite coverage.md from coverage.json and exit")
    ap.add_argument("--label", default=None, help="a note for the run (e.g. the lumos_fx revision)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--record", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        run_worker(args.worker, args.record, args.seed, not args.no_export, args.threads)
        return 0

    if args.render:
        data = json.loads((Path(args.out) / "coverage.json").read_text())
        (Path(args.out) / "coverage.md").write_text(render_markdown(data["results"], data["meta"]))
        print(render_tally(data["results"]))
        return 0

    from benchmarks.coverage_models import LIBRARIES, MODELS
    cases = select(MODELS, args.only, args.models)
    if args.list:
        for c in cases:
            print(c.key)
        print(f"{len(cases)} models")
        return 0
    if not cases:
        print("no model matches; see --list", file=sys.stderr)
        return 2
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logdir = Path(args.logs)
    logdir.mkdir(parents=True, exist_ok=True)

    from concurrent.futures import ThreadPoolExecutor
    import importlib.util
    missing = {}  # library -> reason, once a worker found it missing (the rest are not started)
    for lib, spec in LIBRARIES.items():
        for m in spec.modules:
            if importlib.util.find_spec(m.split(".")[0]) is None:
                missing[lib] = f"library not installed: No module named '{m}'"
                break
    t_start = time.perf_counter()
    results = []

    def task(case):
        if case.library in missing:
            rec = {"library": case.library, "model": case.name, "status": SKIPPED, "reason": missing[case.library],
                   "time_s": 0.0, "run_at": datetime.datetime.now().isoformat(timespec="seconds")}
        else:
            rec = _run_one(case, args, logdir)
            if rec.get("status") == SKIPPED:
                missing[case.library] = rec["reason"]
        print(f"[{len(results) + 1}/{len(cases)}] {case.key:<40} {_status_text(rec)[:110]}  "
              f"({rec.get('wall_s', rec.get('time_s', 0)):.1f} s)", flush=True)
        results.append(rec)
        return rec

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(task, cases))
    wall = time.perf_counter() - t_start

    order = {c.key: i for i, c in enumerate(MODELS)}
    merged = {}
    json_path = out / "coverage.json"
    filtered = bool(args.only or args.models)
    old_meta = {}
    if filtered and not args.fresh and json_path.exists():
        with contextlib.suppress(Exception):
            old = json.loads(json_path.read_text())
            old_meta = old.get("meta", {})
            for r in old.get("results", []):
                merged[f"{r['library']}/{r['model']}"] = r
    for r in results:
        merged[f"{r['library']}/{r['model']}"] = r
    rows = sorted(merged.values(), key=lambda r: order.get(f"{r['library']}/{r['model']}", 10 ** 6))
    meta = dict(old_meta)
    run = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.coverage " + " ".join(argv if argv is not None else sys.argv[1:]),
        "models": len(results), "wall_s": round(wall, 1), "timeout_s": args.timeout, "jobs": args.jobs,
        "threads": args.threads, "seed": args.seed, "label": args.label,
    }
    meta.update(_environment(rows))
    meta["last_run"] = run
    if not filtered:
        meta["full_run"] = run
    json_path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, default=str) + "\n")
    (out / "coverage.md").write_text(render_markdown(rows, meta))
    print(f"\n{len(results)} models in {wall:.0f} s; wrote {out / 'coverage.md'} and {json_path}")
    print(render_tally(rows))
    return 0


def _environment(rows) -> dict:
    import torch

    import lumos_fx
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "lumos_fx_path": str(Path(lumos_fx.__file__).parent),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    with contextlib.suppress(Exception):
        repo = Path(lumos_fx.__file__).resolve().parent.parent
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "lumos_fx"],
                                   capture_output=True, text=True).stdout.strip()
            env["lumos_fx_rev"] = rev.stdout.strip() + (" + uncommitted changes in lumos_fx/" if dirty else "")
    versions = {}
    for r in rows:
        if r.get("library_version"):
            versions[r["library"]] = r["library_version"]
    env["library_versions"] = versions
    return env


# --------------------------------------------------------------------------- report

def _status_text(r: dict) -> str:
    s = r.get("status")
    if s == EXPORTED:
        return EXPORTED
    if s == PRUNED:
        return f"{PRUNED} ({r.get('reason') or 'export failed'})"
    if s == REFUSED:
        return f"refused: {r.get('reason', '')}"
    if s == FAILED:
        at = f"[{r.get('stage')}] " if r.get("stage") else ""
        return f"failed: {at}{r.get('reason', '')}"
    if s == SKIPPED:
        return r.get("reason") or SKIPPED
    return str(s)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_tally(rows) -> str:
    by_lib = collections.OrderedDict()
    for r in rows:
        by_lib.setdefault(r["library"], collections.Counter())[r.get("status")] += 1
    head = ["library", "models", "exported", "pruned, export failed", "refused", "failed", "not installed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = collections.Counter()
    for lib, c in by_lib.items():
        total.update(c)
        lines.append(f"| {lib} | {sum(c.values())} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
    lines.append(f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[s]}**" for s in STATUSES) + " |")
    return "\n".join(lines)


def _cause_key(r: dict) -> str:
    """What groups failures: the innermost exception of the chain (type and first line),
    numbers and addresses replaced by N."""
    err = r.get("cause") or f"{r.get('error_type', '')}: {r.get('error', '')}"
    err = re.sub(r" near \S+?\.py:\d+: [^;]*;", ";", err)  # the line is the model's `where`
    err = re.sub(r"(the traced graph of|could not trace) \S+", r"\1 <model>", err)
    err = re.sub(r"Proxy\(\w+\)", "Proxy(...)", err)
    err = re.sub(r"cannot write module '[^']+'", "cannot write module '...'", err)
    # a guard of the instrumented / pruned model: the line it names is the model's `where`
    err = re.sub(r"lumos_fx: \S+?\.py:\d+: .*? \(decided with .*?\); this input takes another path",
                 "lumos_fx: <line> (decided as for the example inputs); this input takes another path", err)
    return re.sub(r"\b\d+(\.\d+)?\b", "N", re.sub(r"0x[0-9a-f]+", "0x..", err))


def failure_groups(rows) -> list[tuple[str, list[dict]]]:
    """Failures (and export failures) grouped by cause, the largest group first."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status") in (FAILED, PRUNED) and r.get("error_type"):
            groups.setdefault(_cause_key(r), []).append(r)
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))


def render_failures(rows) -> str:
    groups = failure_groups(rows)
    if not groups:
        return "No failures.\n"
    out = []
    for key, rs in groups:
        out.append(f"- **{_md(key)}** ({len(rs)})")
        for r in rs:
            own = f"{r.get('error_type')}: {r.get('error')}"
            locs = [f"`{r['where']}`"] if r.get("where") else []
            if r.get("lumos_where") and r.get("lumos_where") != r.get("where"):
                locs.append(f"raised at `{r['lumos_where']}`")
            text = f"  - {r['library']}/{r['model']}, stage *{r.get('export_stage') or r.get('stage')}*"
            if locs:
                text += ": " + ", ".join(locs)
            if key.split(": ", 1)[-1][:100] not in _cause_key({"error_type": r.get("error_type"),
                                                                "error": r.get("error")}):
                text += f" — {_md(own)}"
            out.append(text)
    return "\n".join(out) + "\n"


def render_markdown(rows, meta) -> str:
    run = meta.get("full_run") or meta.get("last_run", {})
    last = meta.get("last_run", {})
    lines = [
        "# Coverage: lumos_fx on other libraries' models",
        "",
        "Generated by `python -m benchmarks.coverage` (`make coverage`); rerun one library with "
        "`python -m benchmarks.coverage --only LIB`, one model with `--models NAME` (rows are merged into this file).",
        "",
        "Each model (small config, random weights) is instrumented (must equal the original at init, rel err "
        f"< {INIT_TOL:g}), gets {CLOSED_FRACTION:.0%} of every gate's units closed at random, is pruned, and the "
        f"pruned model must equal the gated one (rel err < {PRUNE_TOL:g}) on the example and on inputs of another "
        "batch size and, where the original accepts one, another spatial size or sequence length; parameters must "
        "be cut; the export is loaded in a fresh process (`import model; model.load()`) and compared. *refused*: "
        "nothing was cut (the reason `summary()` gives). *failed*: the stage in brackets raised or a check failed.",
        "",
        f"Environment: Python {meta.get('python')}, torch {meta.get('torch')}, {meta.get('machine')}; "
        f"lumos_fx {meta.get('lumos_fx_rev', '(revision not known: not a git checkout)')} "
        f"at {meta.get('lumos_fx_path', '?')}.",
        f"Full run: {run.get('date', '?')}, {run.get('models', '?')} models in {run.get('wall_s', '?')} s "
        f"(timeout {run.get('timeout_s', '?')} s per model, {run.get('jobs', 1)} at once)"
        + (f", {run['label']}" if run.get("label") else "") + ".",
    ]
    if last and last is not run and last.get("date") != run.get("date"):
        lines.append(f"Last partial run: {last.get('date')}: `{last.get('command')}` ({last.get('models')} models, "
                     f"{last.get('wall_s')} s).")
    versions = meta.get("library_versions") or {}
    if versions:
        lines.append("Library versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    lines += ["", "## Tally", "", render_tally(rows), "", "## Failures by cause", "", render_failures(rows),
              "## Models", "",
              "| library | model | status | params before → after | max rel err | time (s) |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        pb, pa = r.get("params_before"), r.get("params_after")
        params = f"{pb:,} → {pa:,}" if pb is not None and pa is not None else (f"{pb:,}" if pb is not None else "")
        err = r.get("max_rel_err")
        err = f"{err:.1e}" if isinstance(err, (int, float)) else ""
        skipped = [c for c in r.get("checks", []) if c.get("skipped")]
        status = _status_text(r)
        if skipped:
            status += " (not checked on: " + ", ".join(c["input"] for c in skipped) + ", the original rejects it)"
        lines.append(f"| {r['library']} | {r['model']} | {_md(status)} | {params} | {err} | {r.get('time_s', 0):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
