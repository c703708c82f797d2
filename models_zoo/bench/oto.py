r"""OTO (Only-Train-Once; Chen et al., 2023, the ``only-train-once`` package, 3.0) as a pruning
baseline: its dependency graph, its HESSO optimizer and its subnet construction, cut to a
parameter budget in the benchmark's harness (optional: ``pip install lumos_fx[oto]``).

Equal training budget: OTO starts, like the other baselines, from the trained dense model and
gets half the training steps, all of them HESSO steps (the workload's loss, batches and
learning rate, Adam's moments, a cosine schedule); nothing trains after the cut.

OTO's knob is a *group sparsity*, the fraction of its prunable channel groups it zeroes, not a
parameter count. With one pruning period (OTO's default) HESSO picks the groups once, at its
first step, from importance scores of the weights and the first batch's gradients, then
shrinks them to zero over ``pruning_steps``. That pick is reproduced on copies before training:
HESSO with k redundant groups, one step on the first batch at learning rate 0, OTO's
``construct_subnet``, the parameters counted; a bisection on k finds the fewest groups whose
cut is within the budget, and training then runs with that k, so the count it lands on is the
one calibrated (exactly, for a model without randomness in its forward pass).

The import of :mod:`only_train_once` is lazy: without the package, :func:`oto_prune` raises
ImportError (the harness reports "not installed") and :func:`oto_refuses` still answers.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from lumos_fx.report import count_params

from ..workload import Task, Workload
from .baselines import fewest

Batch = tuple[tuple, torch.Tensor]
Draw = Callable[[torch.Generator], Batch]


def alias_moved_torch_onnx() -> None:
    """only_train_once (3.0.1) does ``from torch.onnx._globals import GLOBALS`` and calls
    ``torch.onnx._optimize_graph``; torch >= 2.9 moved both under
    torch.onnx._internal.torchscript_exporter. Alias them where they are missing, before the
    package is imported."""
    import torch.onnx

    try:
        import torch.onnx._globals  # noqa: F401 -- older torch has both in place
    except ModuleNotFoundError:  # torch >= 2.9: the package would fail at its first import
        from torch.onnx._internal.torchscript_exporter import _globals, utils
        sys.modules["torch.onnx._globals"] = _globals
        torch.onnx._optimize_graph = utils._optimize_graph


def _import_oto():
    """only_train_once's OTO class (ImportError without the package)."""
    alias_moved_torch_onnx()
    from only_train_once import OTO
    return OTO


def oto_refuses(model: nn.Module) -> str | None:
    """Why OTO (3.0.1) cannot cut `model`, or None: what it fails on in the zoo, found before
    any training is spent. Complex weights (an FNO) do not trace; it has no operator for
    recurrent layers (an LSTM leaves no prunable group) nor for BatchNorm1d (it cuts the
    scales and not the running statistics); a parameter a custom layer holds itself (a ViT's
    class token, a GCN's root embedding, a GINE layer's eps) it leaves whole while it cuts the
    channels it is joined with. The last two leave a compressed model that fails on its
    inputs. (Other layers it has no operator for, e.g. Conv3d, it keeps whole.)"""
    if any(p.is_complex() for p in model.parameters()):
        return "OTO fails to trace a model with complex spectral weights (neuraloperator's FNO)"
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return "OTO has no rule for recurrent layers"
    own = [f"{type(m).__name__}.{name}" for m in model.modules() if not type(m).__module__.startswith("torch.nn.")
           for name in m._parameters]
    if own:
        return f"OTO cuts the channels a layer's own parameter ({own[0]}) is joined with, and not the parameter"
    if any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        return "OTO cuts a BatchNorm1d's scales and not its running statistics"
    return None


class OTOFailed(RuntimeError):
    """OTO failed on a model: the message says at which stage and why."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """OTO prints its progress and the TorchScript tracer warns on every model: keep the
    harness's output readable."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _stage(what: str) -> Iterator[None]:
    """A failure inside OTO as one short message saying which stage failed (the harness
    records it as the reason the baseline was skipped)."""
    try:
        with _quiet():
            yield
    except OTOFailed:
        raise
    except Exception as err:  # noqa: BLE001 -- whatever OTO raises, say where
        raise OTOFailed(f"OTO could not {what}: {type(err).__name__}: {err}"[:300]) from err


def _hesso(oto, redundant: int, total: int, *, lr: float, pruning_steps: int, device: str):
    """OTO's HESSO (Adam variant, one pruning period from the first step) zeroing `redundant`
    of the `total` prunable groups. HESSO puts its mask of redundant groups on ``.cuda()``
    (hesso.py, identify_redundant_groups); for another device, ``Tensor.cuda`` is that
    device's ``.to`` while that one method runs."""
    # HESSO keeps int(total * sparsity) groups' worth: half a group above k rounds down to k
    sparsity = (redundant + 0.5) / total if redundant else 0.0
    opt = oto.hesso(variant="adam", lr=lr, target_group_sparsity=sparsity, start_pruning_step=0,
                    pruning_steps=pruning_steps, pruning_periods=1)
    if not device.startswith("cuda"):
        identify = opt.identify_redundant_groups

        def on_device() -> None:
            cuda = torch.Tensor.cuda
            torch.Tensor.cuda = lambda self, *args, **kw: self.to(device)
            try:
                identify()
            finally:
                torch.Tensor.cuda = cuda
        opt.identify_redundant_groups = on_device
    return opt


def _backward(model: nn.Module, batch: Batch, loss_fn: Callable, seed: int, device: str) -> torch.Tensor:
    """The loss of `batch` with its gradients; the forward pass seeded, so that the pick
    calibrated on a copy (dropout included) is the pick HESSO makes in training."""
    inputs, target = batch
    inputs, target = tuple(t.to(device) for t in inputs), target.to(device)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loss = loss_fn(model(*inputs), target)
    loss.backward()
    return loss


def _prunable_groups(oto) -> int:
    return sum(g["num_groups"] for g in oto._graph.get_param_groups() if g["is_prunable"] and not g["is_auxiliary"])


def _subnet(oto, out_dir: str, example: tuple) -> nn.Module:
    """OTO's compressed model: construct_subnet writes it, it is read back from the file and
    run on `example` (a cut OTO got wrong fails there)."""
    oto.construct_subnet(out_dir=out_dir, save_full_group_sparse_model=False)
    cut = torch.load(oto.compressed_model_path, weights_only=False, map_location="cpu").eval()
    try:
        with torch.no_grad():
            cut(*example)
    except Exception as err:  # noqa: BLE001 -- a wrong cut fails in any op
        raise OTOFailed(f"OTO's compressed model fails on the example inputs: {type(err).__name__}: {err}"[:300]) \
            from err
    return cut


def redundant_groups_for(oto, budget_params: int, batch: Batch, loss_fn: Callable, example: tuple, *,
                         seed: int = 0, device: str = "cpu") -> tuple[int, int, int]:
    """(k, total, params): the fewest of OTO's `total` prunable groups HESSO must zero for
    the cut to hold at most `budget_params` parameters, and the count at k (the most groups
    it may zero, if no k is small enough), each count from HESSO's own pick at its first step
    on `batch`, on a copy, and OTO's subnet construction."""
    total = _prunable_groups(oto)
    if total == 0:
        raise OTOFailed("OTO finds no prunable group in this model")
    probe = copy.deepcopy(oto._model)  # a copy: the batch would move the model's BatchNorm statistics
    _backward(probe, batch, loss_fn, seed, device)
    grads = [p.grad for p in probe.parameters()]
    counted: dict[int, int] = {}

    def params_at(k: int) -> int:
        if k not in counted:
            trial = copy.deepcopy(oto)
            for p, grad in zip(trial._model.parameters(), grads):
                p.grad = grad  # HESSO reads a clone of it
            _hesso(trial, k, total, lr=0.0, pruning_steps=1, device=device).step()
            with tempfile.TemporaryDirectory() as out:
                counted[k] = count_params(_subnet(trial, out, example))
        return counted[k]

    k = fewest(params_at, min(total - 1, math.floor(0.999 * total)), budget_params)  # HESSO zeroes at most 99.9%
    return k, total, params_at(k)


def oto_prune(model: nn.Module, example: tuple, budget_params: int, draw: Draw, loss_fn: Callable, *,
              steps: int, lr: float = 2e-3, seed: int = 0, device: str = "cpu",
              out_dir: str | None = None) -> tuple[nn.Module, float]:
    """A copy of `model` cut by OTO to about `budget_params` parameters (see the module's
    docstring), and the group sparsity HESSO ran with. HESSO trains it `steps` steps on
    ``loss_fn(model(*inputs), target)`` for ``(inputs, target) = draw(generator)`` (a
    workload's Rows or Collated), at `lr` with a cosine schedule like models_zoo.training.fit,
    shrinking the chosen groups to zero over the first half; then OTO's construct_subnet
    writes the compressed model to `out_dir` (default: a temporary folder) and it is read
    back. Raises ImportError without the package, OTOFailed when OTO fails on the model."""
    oto_class = _import_oto()
    gen = torch.Generator().manual_seed(seed)
    first = draw(gen)  # the calibration's batch and the first training step's
    with _stage("build its dependency graph"):
        oto = oto_class(copy.deepcopy(model).cpu(), tuple(example))
    oto._model.to(device)  # in place: OTO's graph holds these parameters
    with _stage("pick the groups for the budget"):
        k, total, _ = redundant_groups_for(oto, budget_params, first, loss_fn, example, seed=seed, device=device)
    with _stage("train with HESSO"):
        opt = _hesso(oto, k, total, lr=lr, pruning_steps=max(1, steps // 2), device=device)
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            _backward(oto._model, first if step == 0 else draw(gen), loss_fn, seed + step, device)
            opt.step()
            opt.set_learning_rate(lr * 0.5 * (1 + math.cos(math.pi * step / steps)))  # as fit() schedules it
    oto._model.cpu()
    with _stage("construct the subnet"), contextlib.ExitStack() as stack:
        cut = _subnet(oto, out_dir or stack.enter_context(tempfile.TemporaryDirectory()), example)
    return cut, opt.target_num_redundant_groups / total


def oto_baseline(workload: Workload, task: Task, dense: nn.Module, budget_params: int, steps: int, *,
                 seed: int = 0, device: str = "cpu") -> tuple[nn.Module | None, str]:
    """The ``oto`` baseline of models_zoo.bench.run: (the cut model, a note), or (None, why)
    for a model :func:`oto_refuses`; `steps` are the baselines' fine-tuning steps, spent on
    HESSO from the trained `dense` model, so nothing fine-tunes it after."""
    why = oto_refuses(dense)
    if why is not None:
        return None, why
    cut, sparsity = oto_prune(dense, task.example, budget_params, task.train, workload.loss(task), steps=steps,
                              lr=workload.lr, seed=seed + 1, device=device)
    return cut, f"OTO HESSO from the trained dense model, group sparsity {sparsity:.2f}"
