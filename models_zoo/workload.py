"""What every zoo workload is: data at a chosen scale, a model, a loss and a metric.

A :class:`Workload` names its simulator and model family; ``workload.task(scale, seed)``
builds the data (cached on disk by the simulator) and ``workload.model(task)`` a fresh
model for it. The benchmark, the CLI and the tests find workloads by name in
:mod:`models_zoo.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx

from .training import fit, r2_score

#: metric name -> (function of (prediction, target), higher is better)
METRICS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], float], bool]] = {
    "R^2": (r2_score, True),
    "MSE": (lambda pred, target: float(F.mse_loss(pred, target)), False),
    "accuracy": (lambda pred, target: float((pred.argmax(1) == target).float().mean()), True),
}


@dataclass(frozen=True)
class Scale:
    """How big a run is: simulated samples, training steps, mini-batch, the model's width
    factor and the side length of image or volume inputs."""

    samples: int
    steps: int
    batch: int = 64
    width: float = 1.0
    size: int = 32


class Rows:
    """Training data as tensors whose rows are samples: a draw is a random mini-batch."""

    def __init__(self, inputs: tuple[torch.Tensor, ...], target: torch.Tensor, batch: int) -> None:
        self.inputs, self.target, self.batch = inputs, target, batch

    def __call__(self, gen: torch.Generator) -> tuple[tuple, torch.Tensor]:
        idx = torch.randint(0, len(self.target), (self.batch,), generator=gen)
        return tuple(t[idx] for t in self.inputs), self.target[idx]

    def batches(self, size: int) -> list[tuple[tuple, torch.Tensor]]:
        n = len(self.target)
        return [(tuple(t[i:i + size] for t in self.inputs), self.target[i:i + size]) for i in range(0, n, size)]


class Collated:
    """Training data as ready mini-batches (graphs collated into one disjoint graph each): a
    draw is a random one of them."""

    splits_by_rows = False  # a disjoint graph is not split by rows (models_zoo.distributed.shard)

    def __init__(self, batches: list[tuple[tuple, torch.Tensor]]) -> None:
        self.items = batches

    def __call__(self, gen: torch.Generator) -> tuple[tuple, torch.Tensor]:
        return self.items[int(torch.randint(0, len(self.items), (1,), generator=gen))]

    def batches(self, size: int) -> list[tuple[tuple, torch.Tensor]]:
        return self.items


@dataclass
class Task:
    """A workload's data at one scale: training draws, held-out data, the example inputs
    for instrument(), input column names (when inputs are tabular or band-like), and what
    the model builder needs to know (``info``: e.g. standardisation statistics;
    ``info["sequence"]``: inputs are (samples, steps, features))."""

    train: Rows | Collated
    test: Rows | Collated
    example: tuple
    feature_names: dict[str, list[str]] | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    """One of the paper's workloads. ``data(scale, seed)`` builds the task; ``build(task,
    scale)`` a fresh model; ``metric`` names an entry of :data:`METRICS`; ``loss`` trains it.
    Its lumos_fx settings: ``target``, the budget (the fraction of prunable parameters a
    Lumos model keeps, ``Config.target_params``), and ``warmup``, the fraction of the
    training steps an instrumented model trains with its gates held (``Config.gate_warmup``);
    ``lam`` (``Config.lam``, None for the default) is what the workload trained with before
    budgets, kept to repeat those runs.
    Surrogates also list the simulator's informative and uninformative inputs (the ground
    truth of feature selection) and their column values for correlation plots."""

    name: str
    family: str
    metric: str
    data: Callable[[Scale, int], Task]
    build: Callable[[Task, Scale], nn.Module]
    loss: Callable[[Task], Callable]
    scales: dict[str, Scale]
    lr: float = 2e-3
    target: float = 0.25
    lam: float | None = None
    warmup: float = 0.0
    informative: tuple[str, ...] = ()
    uninformative: tuple[str, ...] = ()

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][1]

    def task(self, scale: str | Scale, seed: int = 0) -> Task:
        return self.data(self.scales[scale] if isinstance(scale, str) else scale, seed)

    def model(self, task: Task, scale: str | Scale, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build(task, self.scales[scale] if isinstance(scale, str) else scale)

    def lumos_config(self, steps: int, target: float | None = None) -> lumos_fx.Config:
        """The Config an instrumented model of this workload trains with for `steps` steps:
        the workload's budget (or `target`) and gate warm-up."""
        return lumos_fx.Config(target_params=self.target if target is None else target,
                               gate_warmup=int(self.warmup * steps))

    def lam_config(self, steps: int, lam: float | None = None) -> lumos_fx.Config:
        """As :meth:`lumos_config` with no budget but `lam` (default: the workload's)."""
        lam = self.lam if lam is None else lam
        return lumos_fx.Config(gate_warmup=int(self.warmup * steps), **({} if lam is None else {"lam": lam}))

    def train(self, model: nn.Module, task: Task, steps: int, *, seed: int = 0, loss=None, desc: str = "",
              device: str = "cpu", search: lumos_fx.ToleranceSearch | None = None,
              finetune: float = 0.0) -> list[float]:
        """Train `model` (dense, instrumented or pruned) on the task for `steps` steps on
        `device`; `loss`, if given, wraps the task loss (a baseline's extra penalty); a
        `search` (:meth:`tolerance_search`) finds the budget instead of the workload's; the last
        `finetune` of the steps train an instrumented model's weights with its gates frozen."""
        base = self.loss(task)
        loss_fn = base if loss is None else (lambda pred, target: loss(base(pred, target)))
        return fit(model, task.train, steps=steps, lr=self.lr, seed=seed, loss_fn=loss_fn,
                   desc=desc or f"{self.name}", device=device, search=search, finetune=finetune)

    def tolerance_search(self, wrapped: nn.Module, validation: Rows | Collated,
                         tolerance: float) -> lumos_fx.ToleranceSearch:
        """The search for the smallest model within `tolerance` of the best validation metric
        on `validation`: an absolute drop of R^2 or accuracy, a relative rise of an MSE
        (0.1: 10% above; the search holds -log MSE within log(1 + tolerance))."""
        compute, higher_is_better = METRICS[self.metric]

        def validate(model) -> float:
            value = compute(*_predictions(model, validation))
            return value if higher_is_better else -math.log(value)
        return lumos_fx.ToleranceSearch(wrapped, validate, tolerance if higher_is_better else math.log1p(tolerance))

    def predict(self, model: nn.Module, task: Task, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            return _predictions(model, task.test, batch)

    def evaluate(self, model: nn.Module, task: Task) -> float:
        """The workload's metric of `model` on the held-out data."""
        return METRICS[self.metric][0](*self.predict(model, task))


def _predictions(model: nn.Module, data: Rows | Collated, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """`model`'s outputs on every batch of `data`, and the targets, each joined."""
    parts = [(model(*inputs), target) for inputs, target in data.batches(batch)]
    return torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts])


def held_out(task: Task, fraction: float = 0.1) -> tuple[Task, Rows | Collated]:
    """`task` with the last `fraction` of its training data set aside, and that part: the
    validation data of a tolerance run (the test data stay for the reported metric)."""
    if isinstance(task.train, Collated):
        cut = len(task.train.items) - max(1, int(fraction * len(task.train.items)))
        train, validation = Collated(task.train.items[:cut]), Collated(task.train.items[cut:])
    else:
        rows = task.train
        cut = len(rows.target) - max(1, int(fraction * len(rows.target)))
        train = Rows(tuple(t[:cut] for t in rows.inputs), rows.target[:cut], rows.batch)
        validation = Rows(tuple(t[cut:] for t in rows.inputs), rows.target[cut:], rows.batch)
    return replace(task, train=train), validation


def split_rows(x: np.ndarray, y: np.ndarray, batch: int, test_fraction: float = 0.2) -> tuple[Rows, Rows]:
    """The first samples for training, the last `test_fraction` held out."""
    cut = int((1 - test_fraction) * len(x))
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    return Rows((xt[:cut],), yt[:cut], batch), Rows((xt[cut:],), yt[cut:], batch)


def classification_loss(task: Task):
    return F.cross_entropy


def mse_loss(task: Task):
    return F.mse_loss


def standardized_loss(task: Task):
    """MSE in units of each target column's standard deviation on the training data."""
    scale = task.train.target.std(0).clamp_min(1e-8)
    return lambda pred, target: F.mse_loss(pred / scale.to(pred.device), target / scale.to(pred.device))


def image_task(x: np.ndarray, y: np.ndarray, batch: int, channel_names: list[str] | None = None) -> Task:
    """Images or volumes (n, channels, ...) and their targets, 20% held out; `channel_names`
    names the input channels when they are features worth selecting (bands, redshifts).
    Sequences (n, steps, features) are split alike."""
    train, test = split_rows(x, y, batch)
    return Task(train, test, (train.inputs[0][:8],), {"x": channel_names} if channel_names else None)


def image_scales(size: int = 32, cpu_steps: int = 600, cpu_samples: int = 3000, cpu_batch: int = 64,
                 cpu_width: float = 0.25) -> dict[str, Scale]:
    """smoke: seconds on a CPU; cpu: about a minute per training run; gpu: the full model."""
    return {
        "smoke": Scale(samples=96, steps=4, batch=16, width=0.125, size=size),
        "cpu": Scale(samples=cpu_samples, steps=cpu_steps, batch=cpu_batch, width=cpu_width, size=size),
        "gpu": Scale(samples=20_000, steps=5000, batch=128, width=1.0, size=2 * size),
    }


def graph_task(graphs: list, labels: torch.Tensor, batch: int, feature_names: dict | None = None) -> Task:
    """Graphs collated into mini-batches of `batch` graphs, 20% held out; ``info["single"]``
    is one held-out graph alone (for batch-1 latency)."""
    from .graph.batching import collate, graph_batches

    cut = int(0.8 * len(graphs))
    train = Collated(graph_batches(graphs[:cut], labels[:cut], batch))
    return Task(train, Collated(graph_batches(graphs[cut:], labels[cut:], 256)), train.items[0][0], feature_names,
                info={"single": collate(graphs[cut:cut + 1])})


def graph_scales() -> dict[str, Scale]:
    return {
        "smoke": Scale(samples=64, steps=4, batch=16, width=0.1),
        "cpu": Scale(samples=3000, steps=800, batch=32, width=0.25),
        "gpu": Scale(samples=40_000, steps=10_000, batch=128, width=1.0),
    }
