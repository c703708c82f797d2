"""One workload through the benchmark: a dense and a Lumos model trained alike, the Lumos
model pruned, both measured side by side; then the baselines at Lumos's parameter count."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

import lumos_fx
from lumos_fx.report import count_flops, count_params

from ..measure import (
    cuda_latency,
    gpu_energy_joules,
    interleaved_latency,
    peak_inference_bytes,
)
from ..workload import Collated, Scale, Task, Workload
from . import baselines, oto

LARGE_BATCH = {"MLP": 4096}  # rows of the large-batch latency; images and graphs use 256


def _timed_training(workload: Workload, model, task: Task, steps: int, **kw) -> float:
    start = time.perf_counter()
    workload.train(model, task, steps, **kw)
    return time.perf_counter() - start


def latency_inputs(workload: Workload, task: Task) -> tuple[tuple, tuple]:
    """Inputs of one sample and of a large batch from the held-out data."""
    if isinstance(task.test, Collated):
        return task.info["single"], task.test.items[0][0]
    x = task.test.inputs
    return tuple(t[:1] for t in x), tuple(t[:LARGE_BATCH.get(workload.family, 256)] for t in x)


def features(summary: lumos_fx.Summary, task: Task) -> tuple[int, int, list[str]]:
    """Total and kept input features of the named inputs, and the kept names."""
    kept = [n for name in (task.feature_names or {}) for n in summary.features.get(name, ((), ()))[0]]
    total = sum(len(v) for v in (task.feature_names or {}).values())
    return total, len(kept), kept


def run_workload(workload: Workload, scale: Scale, *, seed: int = 0, repeats: int = 50,
                 device: str = "cpu", target: float | None = None, lam: bool = False,
                 finetune: float = 0.0) -> tuple[dict, dict]:
    """The benchmark row of `workload` (see results/bench.json) and the models and task the
    baselines need. Training runs on `device`; pruning and the CPU measurements on the CPU.
    The Lumos model trains to the workload's budget, or to `target`; with `lam`, to no
    budget but with the workload's lam (the runs before budgets); its last `finetune` of
    the steps with its gates frozen."""
    task = workload.task(scale, seed)
    dense = workload.model(task, scale, seed)
    config = workload.lam_config(scale.steps) if lam else workload.lumos_config(scale.steps, target)
    wrapped = lumos_fx.instrument(workload.model(task, scale, seed), task.example,
                                  feature_names=task.feature_names, config=config)
    train_dense = _timed_training(workload, dense, task, scale.steps, seed=seed, desc=f"{workload.name} dense",
                                  device=device)
    train_lumos = _timed_training(workload, wrapped, task, scale.steps, seed=seed, desc=f"{workload.name} lumos",
                                  device=device, finetune=finetune)
    pruned = lumos_fx.prune(wrapped)
    summary = lumos_fx.summary(pruned)
    one, large = latency_inputs(workload, task)
    models = {"dense": dense.eval(), "lumos": pruned.eval()}
    b1 = interleaved_latency(models, one, repeats=repeats * 4)
    big = interleaved_latency(models, large, repeats=repeats)
    total, kept, kept_names = features(summary, task)
    row = {
        "workload": workload.name, "family": workload.family, "metric": workload.metric,
        "higher_is_better": workload.higher_is_better,
        "metric_dense": workload.evaluate(dense, task), "metric_lumos": workload.evaluate(pruned, task),
        "params_dense": count_params(dense), "params_lumos": count_params(pruned),
        "flops_dense": count_flops(dense, one), "flops_lumos": count_flops(pruned, one),
        "latency_b1_dense_ms": b1["dense"] * 1e3, "latency_b1_lumos_ms": b1["lumos"] * 1e3,
        "large_batch": int(large[-1].max()) + 1 if isinstance(task.test, Collated) else len(large[0]),
        "latency_large_dense_ms": big["dense"] * 1e3, "latency_large_lumos_ms": big["lumos"] * 1e3,
        "peak_memory_dense_mb": peak_inference_bytes(dense, large) / 2 ** 20,
        "peak_memory_lumos_mb": peak_inference_bytes(pruned, large) / 2 ** 20,
        "train_time_dense_s": train_dense, "train_time_lumos_s": train_lumos,
        "features_total": total, "features_kept": kept, "features_kept_names": kept_names,
        "scale": vars(scale), "target": config.target_params, "lam": config.lam if lam else None,
        "finetune": finetune,
    }
    if workload.informative or workload.uninformative:
        names = set(kept_names)
        row["informative_kept"] = [f for f in workload.informative if f in names or copy_kept(f, names)]
        row["uninformative_kept"] = [f for f in workload.uninformative if f in names]
    if torch.cuda.is_available():
        row.update(gpu_measurements(models, one, large, repeats))
    return row, {"task": task, "dense": dense, "pruned": pruned}


def copy_kept(feature: str, kept: set[str]) -> bool:
    """CFD's rho_L counts as kept when its exact copy is."""
    return f"{feature}_copy" in kept


def gpu_measurements(models: dict, one: tuple, large: tuple, repeats: int) -> dict:
    """The same latencies on the GPU (CUDA events, warm-up), peak memory and energy per call."""
    gpu = {k: m.cuda() for k, m in models.items()}
    one, large = tuple(t.cuda() for t in one), tuple(t.cuda() for t in large)
    out = {}
    for label, inputs in (("b1", one), ("large", large)):
        t = cuda_latency(gpu, inputs, repeats=repeats * (4 if label == "b1" else 1))
        out.update({f"gpu_latency_{label}_{k}_ms": v * 1e3 for k, v in t.items()})
    for k, m in gpu.items():
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            m(*large)
        out[f"gpu_peak_memory_{k}_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        out[f"gpu_energy_{k}_j"] = gpu_energy_joules(m, large, repeats)
    for m in models.values():
        m.cpu()
    return out


def run_baselines(workload: Workload, scale: Scale, row: dict, trained: dict, *, seed: int = 0,
                  methods: tuple[str, ...] = ("lumos+ft", "lumos+kd", "l1", "slimming", "depgraph", "oto"),
                  device: str = "cpu") -> list[dict]:
    """Each baseline cut to the Lumos model's parameter count, fine-tuned for half the
    training steps, measured on the held-out data. ``lumos+ft`` fine-tunes the Lumos-pruned
    model for the same steps, so that every method has had the same training budget.
    ``lumos+kd`` spends those steps as the baselines do, on the trained dense model: it is
    instrumented with the Lumos budget and the dense model as its teacher, and trains its
    gates and weights for half the steps, the last :data:`KD_FINETUNE` of them with the
    gates frozen (:func:`lumos_fx.freeze_gates`). ``oto`` spends them on OTO's HESSO
    training from the trained dense model (:mod:`models_zoo.bench.oto`)."""
    task = trained["task"]
    budget = row["params_lumos"]
    finetune = max(1, scale.steps // 2)
    rows = []
    for method in methods:
        start = time.perf_counter()
        try:
            model, note = _baseline(method, workload, scale, task, trained, budget, seed, device)
            if model is not None:
                with torch.no_grad():
                    model.eval()(*task.example)  # a cut that no longer runs is reported, not trained
        except ImportError as err:
            rows.append({"workload": workload.name, "method": method, "skipped": f"not installed: {err.name}"})
            continue
        except Exception as err:  # noqa: BLE001 -- a baseline that cannot cut this model is a result
            rows.append({"workload": workload.name, "method": method, "skipped": f"{type(err).__name__}: {err}"[:300]})
            continue
        if model is None:
            rows.append({"workload": workload.name, "method": method, "skipped": note})
            continue
        if method not in TRAIN_THEMSELVES:
            workload.train(model, task, finetune, seed=seed + 1, desc=f"{workload.name} {method} fine-tune",
                           device=device)
        params = count_params(model)
        rows.append({"workload": workload.name, "method": method, "metric": workload.metric,
                     "metric_value": workload.evaluate(model, task), "params": params,
                     "params_dense": row["params_dense"], "within_budget": params <= BUDGET_SLACK * budget,
                     "time_s": time.perf_counter() - start, "note": note})
    rows.append({"workload": workload.name, "method": "lumos", "metric": workload.metric,
                 "metric_value": row["metric_lumos"], "params": row["params_lumos"], "params_dense": row["params_dense"],
                 "within_budget": True, "time_s": row["train_time_lumos_s"], "note": "one training run, no fine-tuning"})
    return rows


BUDGET_SLACK = 1.05  # a cut this close to Lumos's count is at equal compression; above it, flagged
TRAIN_THEMSELVES = {"lumos+kd", "oto"}  # their half of the steps is their own training, not a fine-tune after the cut
KD_FINETUNE = 0.3  # of lumos+kd's steps, with its gates frozen


def _baseline(method: str, workload: Workload, scale: Scale, task: Task, trained: dict, budget: int, seed: int,
              device: str):
    dense = trained["dense"]
    if method == "lumos+ft":
        return copy.deepcopy(trained["pruned"]), "the Lumos-pruned model, fine-tuned like the baselines"
    if method == "lumos+kd":
        return _distilled_from_dense(workload, scale, task, trained, seed, device), \
            f"the trained dense model gated to the Lumos budget, distilled from it, last {KD_FINETUNE:.0%} frozen"
    if method == "l1":
        return _cut_with_lumos(copy.deepcopy(dense), task, baselines.l1_scores, budget), "L1 norm of producing weights"
    if method == "slimming":
        if not baselines.has_batchnorm(dense):
            return None, "no BatchNorm in the model"
        model = workload.model(task, scale, seed)
        workload.train(model, task, scale.steps, seed=seed, loss=baselines.slimming_penalty(model),
                       desc=f"{workload.name} slimming", device=device)
        return _cut_with_lumos(model, task, baselines.bn_scores, budget), "|gamma| after L1-on-BN training"
    if method == "depgraph":
        why = baselines.depgraph_refuses(dense)
        if why is not None:
            return None, why
        model = copy.deepcopy(dense)
        return baselines.depgraph_prune(model, task.example, budget, baselines.output_layer(model)), \
            "torch-pruning GroupMagnitudeImportance, global"
    if method == "oto":
        return oto.oto_baseline(workload, task, dense, budget, max(1, scale.steps // 2), seed=seed, device=device)
    raise ValueError(f"unknown baseline {method!r}")


def _distilled_from_dense(workload: Workload, scale: Scale, task: Task, trained: dict, seed: int, device: str):
    """``lumos+kd``: the dense model instrumented with the Lumos run's budget and itself as
    the teacher (the softened class probabilities for a classifier, the task loss on the
    teacher's outputs otherwise), trained for half the steps, then pruned."""
    steps = max(1, scale.steps // 2)
    loss = "kl" if workload.metric == "accuracy" else workload.loss(task)
    budget = lumos_fx.summary(trained["pruned"]).budget
    if budget is None:
        raise ValueError("the Lumos run had no budget to match (a lam run)")
    # the fraction the Lumos cut kept, to 2% of itself: Config's default tolerance of 0.01 of
    # the prunable parameters is a third of a model that keeps 3%
    config = lumos_fx.Config(target_params=budget.after, budget_tolerance=0.02 * budget.after,
                             budget_warmup=max(1, steps // 4), distill=lumos_fx.Distill(loss=loss))
    wrapped = lumos_fx.instrument(copy.deepcopy(trained["dense"]), task.example, feature_names=task.feature_names,
                                  config=config)
    workload.train(wrapped, task, steps, seed=seed + 1, desc=f"{workload.name} lumos+kd", device=device,
                   finetune=KD_FINETUNE)
    return lumos_fx.prune(wrapped)


def _cut_with_lumos(model, task: Task, score, budget: int):
    wrapped = lumos_fx.instrument(model, task.example)
    scores = score(wrapped)
    if not scores:
        raise ValueError("no prunable channel has a score")
    baselines.cut_to_budget(wrapped, scores, budget)
    return lumos_fx.prune(wrapped)


def feature_correlations(task: Task) -> dict[str, list[float]]:
    """Input name -> per feature, the largest |Pearson r| with any output (tabular inputs
    against target columns, a sequence's last step likewise; per-pixel bands against a
    per-pixel target)."""
    out = {}
    if task.feature_names is None or isinstance(task.train, Collated):
        return out
    x, y = task.train.inputs[0][:20_000].double(), task.train.target[:20_000].double()
    if task.info.get("sequence"):  # (n, steps, features)
        x = x[:, -1]
    if x.dim() == 2:
        xs, ys = x, y.reshape(len(y), -1)
    elif y.dim() == x.dim() - 1:  # per-pixel labels
        xs, ys = x.movedim(1, -1).reshape(-1, x.shape[1]), y.reshape(-1, 1)
    elif y.shape[2:] == x.shape[2:]:  # per-pixel fields
        xs, ys = x.movedim(1, -1).reshape(-1, x.shape[1]), y.movedim(1, -1).reshape(-1, y.shape[1])
    else:  # per-sample targets: channel means
        xs, ys = x.flatten(2).mean(-1), y.reshape(len(y), -1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant column has no correlation: 0
        corr = np.nan_to_num(np.corrcoef(xs.T.numpy(), ys.T.numpy())[: xs.shape[1], xs.shape[1]:])
    out[next(iter(task.feature_names))] = np.abs(corr).max(1).tolist()
    return out

