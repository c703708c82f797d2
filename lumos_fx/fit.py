"""A small trainer for an instrumented model, for those without a training loop of their own."""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx
from torch.utils._pytree import SequenceKey, keystr, tree_flatten_with_path, tree_map
from tqdm.auto import tqdm

from .budget import attach_budget, budget_of
from .complexity import complexity_loss, expected_kept, param_groups
from .distill_loss import distill_loss
from .errors import InputError, TrainingError
from .finetune import freeze_gates
from .plan import GATES, instrumented, plan_of
from .tolerance import ToleranceSearch

BatchFn = Callable[[Any], tuple[Any, Any]]


def fit(wrapped: fx.GraphModule, loader: Iterable, loss_fn: Callable[[Any, Any], torch.Tensor], *,
        epochs: int = 1, lr: float = 1e-3, weight_decay: float = 0.0, target: float | None = None, device=None,
        checkpoint=None, progress: bool = True, batch_fn: BatchFn | None = None,
        steps_per_epoch: int | None = None, validate: Callable[[torch.nn.Module], float] | None = None,
        tolerance: float | None = None, validate_every: int | None = None, finetune: float = 0.0) -> list[dict]:
    """Train `wrapped` on `loader` with Adam, the complexity term (or a budget) added to
    ``loss_fn(wrapped(*inputs), target)``, and :func:`lumos_fx.distill_loss` where the model
    has a teacher (``Config(distill=...)``); returns one record per epoch (mean task loss,
    the complexity term with the distillation term, expected kept fraction).

    Args:
        wrapped: a model from :func:`lumos_fx.instrument`, or that model under
            ``torch.compile``: the steps run the compiled one, checkpoints hold the model's
            own state dict.
        loader: an iterable of batches ``(x, y)`` or ``(x_1, ..., x_n, y)``: every element
            but the last is a positional input of the model, the last is the target (a
            ``torch.utils.data.DataLoader`` over a ``TensorDataset`` yields these). Inputs
            may be tensors or nested tuples, lists and dicts of tensors; every tensor in
            them and in the target moves to `device`. Any other batch needs `batch_fn`.
        loss_fn: ``loss_fn(output, target) -> scalar``.
        epochs: passes over `loader`, an int >= 1. More than one needs a re-iterable
            `loader` (a list, a DataLoader), not a generator, which runs out after one pass.
        lr, weight_decay: the weights' Adam settings; the weights' learning rate follows a
            cosine from `lr` to 0 over the run, the gates' (``Config.gate_lr``) stays.
        target: keep this fraction of the prunable parameters (a budget, as
            ``Config(target_params=...)``; the target ramps down over the first quarter of
            the steps or ``Config.budget_warmup``, whichever is shorter).
        device: where to train (default: where the model is).
        checkpoint: a file: written after every epoch (model with gates and budget,
            optimizer, schedule, epoch, RNG states) and, when it exists, resumed from, so
            an interrupted run started again with the same arguments finishes as one that
            was never interrupted.
        progress: a tqdm bar with task loss, complexity and expected kept fraction.
        batch_fn: ``batch_fn(batch) -> (inputs, target)`` for batches of any other form,
            ``inputs`` a tuple of the model's positional inputs (a single tensor is one
            input); for dict batches, e.g. ``batch_fn=lambda b: ((b["x"], b["t"]), b["y"])``.
        steps_per_epoch: the batches one pass over `loader` yields, which the schedules
            need; default ``len(loader)``, required for a loader without ``len()``.
        validate, tolerance: a size found instead of given
            (:class:`lumos_fx.tolerance.ToleranceSearch`): ``validate(model) -> float``
            (higher is better, e.g. accuracy or R^2 on held-out data) is called every
            `validate_every` steps and at the end; the first call, before any pressure to
            prune, ends the dense phase, and the budget's target keeps falling while the
            metric stays within `tolerance` of the best any validation has shown and backs
            off when it does not. At the end the smallest model within the tolerance of the
            final best is loaded into `wrapped`, for prune() to cut as it is.
            Excludes `target`; a budget the model was instrumented with gives the kind
            (parameters or FLOPs), not the size. Each epoch's record then also holds its
            validations, the last one's the model chosen (``"chosen"``).
        validate_every: steps between validations (default: one epoch); the first
            validation ends the dense phase, so give it the steps the model needs to learn.
        finetune: the fraction of the run's steps, at its end, that fine-tune the weights of
            the cut model: at its start the gates are settled and frozen
            (:func:`lumos_fx.freeze_gates` with fit's optimizer, so a model under
            ``DistributedDataParallel`` trains on; a tolerance search chooses its model
            first), and the complexity term stops. 0 (the default): the gates train to the end.

    Raises:
        InputError: a setting out of range, a batch fit cannot split into inputs and target,
            or a loader it cannot count or pass over `epochs` times.
        TrainingError: the task loss is NaN or inf, at the first step where it is (before
            that step updates anything), naming the epoch and step and what to check.
        GateError: a gate's ``log_alpha`` is NaN or inf (from :func:`lumos_fx.complexity_loss`).
    """
    forward, wrapped = wrapped, instrumented(wrapped)
    plan = plan_of(wrapped)
    _check_settings(epochs, lr, weight_decay, target, batch_fn, finetune)
    per_epoch = _steps_per_epoch(loader, epochs, steps_per_epoch)
    steps = epochs * per_epoch
    tuned = round(finetune * steps)
    search = _search_for(wrapped, target, validate, tolerance, validate_every, steps)
    if target is not None:
        _budget_for(wrapped, plan, target, steps)
    device = torch.device(device) if device is not None else next(wrapped.parameters()).device
    wrapped.to(device).train()
    opt = torch.optim.Adam(param_groups(wrapped, lr, weight_decay=weight_decay))
    cosine = [(lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))) if g["name"] == "weights"
              else (lambda s: 1.0) for g in opt.param_groups]
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    run = _Run(wrapped, forward, loss_fn, batch_fn, opt, schedule, device, lr, epochs, per_epoch, progress,
               search, validate_every or per_epoch, steps - tuned if tuned else None)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        start, history = _resume(Path(checkpoint), wrapped, opt, schedule, search)
        if getattr(wrapped, GATES).frozen:  # resumed inside the fine-tune: this optimizer must skip the gates
            freeze_gates(wrapped, opt)
    for epoch in range(start, epochs):
        history.append({"epoch": epoch + 1, **run.epoch(loader, epoch)})
        if search is not None and epoch + 1 == epochs:
            history[-1]["chosen"] = search.chosen or search.finish()
        if checkpoint is not None:
            _save(Path(checkpoint), epoch + 1, history, wrapped, opt, schedule, search)
    wrapped.eval()
    return history


@dataclass
class _Run:
    """What every step of a :func:`fit` run uses."""

    wrapped: fx.GraphModule
    forward: torch.nn.Module  # wrapped, or wrapped under torch.compile
    loss_fn: Callable[[Any, Any], torch.Tensor]
    batch_fn: BatchFn | None
    opt: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    lr: float
    epochs: int
    per_epoch: int
    progress: bool
    search: ToleranceSearch | None
    validate_every: int
    freeze_at: int | None  # steps of the run after which freeze_gates() fixes the gates

    def epoch(self, loader: Iterable, epoch: int) -> dict:
        """One pass over `loader`: the means of the task loss and of the complexity term,
        and the expected kept fraction at its end."""
        sums = {"loss": 0.0, "complexity": 0.0}
        validations = []
        # A bar updated by hand, not tqdm(loader): tqdm.auto's tqdm calls iter(loader) in its
        # constructor and again to iterate, which would start a DataLoader's workers (and
        # draw its seed) twice an epoch.
        with tqdm(total=self.per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress,
                  leave=False) as bar:
            done = 0
            for done, batch in enumerate(loader, start=1):
                loss, term = self.step(batch, epoch + 1, done)
                last = epoch + 1 == self.epochs and done == self.per_epoch
                searching = self.search is not None and self.search.chosen is None
                if searching and (self.schedule.last_epoch % self.validate_every == 0 or last):
                    validations.append(self.search.validated())
                sums["loss"] += loss
                sums["complexity"] += term
                if self.progress:  # the kept fraction costs a pass over the cost model
                    bar.set_postfix(loss=f"{loss:.4g}", complexity=f"{term:.3g}",
                                    kept=f"{_kept(self.wrapped):.1%}", refresh=False)
                bar.update()  # redraws, at most every tqdm's mininterval
        record = {**{k: v / max(1, done) for k, v in sums.items()}, "kept": _kept(self.wrapped)}
        return record if self.search is None else {**record, "validations": validations}

    def step(self, batch: Any, epoch: int, i: int) -> tuple[float, float]:
        """Train on one batch, step `i` of `epoch` (both from 1); the task loss and the complexity term."""
        if self.schedule.last_epoch == self.freeze_at:
            if self.search is not None and self.search.chosen is None:
                self.search.finish()
            freeze_gates(self.wrapped, self.opt)
        inputs, target = _to(self.device, _split(batch, self.batch_fn, self.wrapped))
        _check_arity(self.wrapped, inputs, batch)
        output = self.forward(*inputs)
        loss = self.loss_fn(output, target)
        term = complexity_loss(self.wrapped)  # raises itself at a non-finite gate or multiplier
        if plan_of(self.wrapped).config.distill is not None:
            term = term + distill_loss(self.wrapped, inputs, output)
        value = _scalar(loss)
        if not math.isfinite(value):  # before backward: this step changes nothing
            where = (f"epoch {epoch}/{self.epochs}, step {i} of {self.per_epoch} "
                     f"(step {self.schedule.last_epoch + 1} of the run)")
            raise _non_finite_loss(value, where, inputs, target, self.wrapped, self.lr)
        self.opt.zero_grad(set_to_none=True)
        (loss + term).backward()
        self.opt.step()
        self.schedule.step()
        return value, term.item()


def _scalar(loss: Any) -> float:
    """The value of the loss, which must be one number (a per-sample loss would fail in backward)."""
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise InputError(f"loss_fn must return a scalar tensor to train on; it returned {_describe(loss)} "
                         "(a loss with reduction='none'? reduce it with .mean())")
    return loss.item()


def _check_settings(epochs: Any, lr: Any, weight_decay: Any, target: Any, batch_fn: Any, finetune: Any) -> None:
    """Refuse a setting out of range before anything runs (``epochs=0`` would divide by zero steps)."""
    if not _is_int(epochs) or epochs < 1:
        raise InputError(f"fit(epochs={epochs!r}): epochs is the number of passes over the loader, an int >= 1")
    if not _is_finite_number(lr) or lr <= 0:
        raise InputError(f"fit(lr={lr!r}): the weights' learning rate must be a finite number > 0")
    if not _is_finite_number(weight_decay) or weight_decay < 0:
        raise InputError(f"fit(weight_decay={weight_decay!r}): the weights' decay must be a finite number >= 0")
    if target is not None and not (_is_finite_number(target) and 0 < target < 1):
        raise InputError(f"fit(target={target!r}): the fraction of prunable parameters to keep, 0 < target < 1")
    if not (_is_finite_number(finetune) and 0 <= finetune < 1):
        raise InputError(f"fit(finetune={finetune!r}): the fraction of the steps that fine-tune the cut model at "
                         "the end, 0 <= finetune < 1")
    if batch_fn is not None and not callable(batch_fn):
        raise InputError(f"fit(batch_fn={batch_fn!r}): batch_fn must be a function batch -> (inputs, target)")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _steps_per_epoch(loader: Iterable, epochs: int, given: int | None) -> int:
    """The steps of one pass over `loader`, which the cosine schedule and a budget's warm-up
    are laid out over: `given`, else ``len(loader)``."""
    if epochs > 1 and isinstance(loader, Iterator):  # iter(loader) is loader: one pass only
        raise InputError(f"fit(epochs={epochs}) passes over the loader {epochs} times, but the loader is an "
                         f"iterator ({type(loader).__name__}), which runs out after one pass: pass a re-iterable, "
                         "a list of batches or a torch.utils.data.DataLoader")
    if given is not None:
        if not _is_int(given) or given < 1:
            raise InputError(f"fit(steps_per_epoch={given!r}): the batches of one pass, an int >= 1")
        return int(given)
    try:
        count = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(f"fit cannot count the batches of this loader ({type(loader).__name__} has no len()), "
                         "and the cosine schedule and a budget's warm-up need the number of steps: pass "
                         "steps_per_epoch=<batches per pass>") from None
    if count == 0:
        raise InputError("the loader is empty (len(loader) == 0): fit has no batch to train on")
    return count


def _split(batch: Any, batch_fn: BatchFn | None, wrapped: fx.GraphModule) -> tuple[tuple, Any]:
    """The model's positional inputs and the target of one batch. A batch ``((x, t), y)``
    (a dataset of (inputs, target) pairs) spreads its inputs when the model's first argument
    is a tensor, not a container."""
    if batch_fn is not None:
        return _from_batch_fn(batch_fn(batch))
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        inputs = tuple(batch[:-1])
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)) and _takes_tensor_first(wrapped):
            inputs = tuple(inputs[0])
        return inputs, batch[-1]
    raise InputError(f"fit takes batches (x, y) or (x_1, ..., x_n, y), the last element the target; the loader "
                     f"gave {_describe(batch)}. Tell fit how to split it: {_batch_fn_hint(batch)}")


def _takes_tensor_first(wrapped: fx.GraphModule) -> bool:
    leaves = wrapped.meta.get("lumos_inputs", [])
    return bool(leaves) and leaves[0].path == (SequenceKey(0),) and leaves[0].tensor


def _from_batch_fn(out: Any) -> tuple[tuple, Any]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise InputError(f"fit(batch_fn=...) must return (inputs, target); it returned {_describe(out)}")
    inputs, target = out
    return (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), target


def _check_arity(wrapped: fx.GraphModule, inputs: tuple, batch: Any) -> None:
    """Catch a batch whose inputs do not fit the model's forward (a batch ``((x, t), y)``
    for ``forward(x, t)``, say) before the call, with the batch's form and the fix."""
    signature = inspect.signature(wrapped.forward)
    try:
        signature.bind(*inputs)
    except TypeError:
        raise InputError(f"the model's forward takes {signature}, but the batch gives {len(inputs)} positional "
                         f"input(s) before its target: {_describe(batch)}. A batch is (x_1, ..., x_n, y); for "
                         f"another form pass {_batch_fn_hint(batch)}") from None


def _to(device: torch.device, tree: Any) -> Any:
    return tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, tree)


def _describe(value: Any) -> str:
    """The first level of a batch, for an error message: its type and its items' types and shapes."""
    if isinstance(value, dict):
        return f"a dict {{{', '.join(f'{k!r}: {_item(v)}' for k, v in value.items())}}}"
    if isinstance(value, (tuple, list)):
        shown = ", ".join(_item(v) for v in value[:6]) + (", ..." if len(value) > 6 else "")
        return f"a {type(value).__name__} of {len(value)} ({shown})"
    return f"a {_item(value)}"


def _item(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (tuple, list, dict)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _batch_fn_hint(batch: Any) -> str:
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], (tuple, list)):
        return "batch_fn=lambda b: b (a batch (inputs, target) whose inputs spread into the forward's arguments)"
    if isinstance(batch, dict) and len(batch) >= 2:
        *inputs, target = (f"b[{k!r}]" for k in batch)
        return f"batch_fn=lambda b: (({', '.join(inputs)},), {target}) (with your model's inputs and target)"
    return "batch_fn=lambda b: ((<the model's inputs>,), <the target>)"


def _non_finite_loss(value: float, where: str, inputs: tuple, target: Any, wrapped: fx.GraphModule,
                     lr: float) -> TrainingError:
    """The error for a NaN or inf task loss, with what the batch and the weights say of its cause."""
    data = [f"inputs{path}" for path, leaf in _tensors(inputs) if not torch.isfinite(leaf).all()]
    data += [f"target{path}" for path, leaf in _tensors(target) if not torch.isfinite(leaf).all()]
    weights = [name for name, p in wrapped.named_parameters() if not torch.isfinite(p).all()]
    message = f"the task loss is {value} at {where}; the model was not updated by this step. "
    if data:
        cause = (f"The batch holds NaN or inf in {', '.join(data)}: clean the data, or drop such batches "
                 "in the loader.")
    elif weights:
        cause = (f"The weights already hold NaN or inf ({', '.join(weights[:4])}): an earlier step's "
                 f"gradients were not finite; lower the learning rate (lr={lr}).")
    else:
        cause = (f"The batch and the weights are finite: check loss_fn on this output and target (a log or "
                 f"a division at zero?) and lower the learning rate (lr={lr}).")
    return TrainingError(message + cause)


def _tensors(tree: Any) -> list[tuple[str, torch.Tensor]]:
    """Every tensor of a nested structure, with its path (``[0]['x']``)."""
    leaves, _ = tree_flatten_with_path(tree)
    return [(keystr(path), leaf) for path, leaf in leaves if isinstance(leaf, torch.Tensor)]


def _kept(wrapped) -> float:
    with torch.no_grad():
        return float(expected_kept(wrapped))


def _budget_for(wrapped, plan, target: float, steps: int) -> None:
    """fit(target=...) on a model instrumented without a budget: the budget of `target`, warmed
    up over the first quarter of training at most."""
    budget = budget_of(wrapped)
    if budget is not None:
        if budget.target != target:
            raise InputError(f"the model was instrumented with a budget of {budget.target}; fit(target={target}) "
                             "asks for another. Pass one of them, not both.")
        return
    attach_budget(wrapped, replace(plan.config, target_params=target,
                                   budget_warmup=min(plan.config.budget_warmup, max(1, steps // 4))))


def _search_for(wrapped, target, validate, tolerance, validate_every, steps: int) -> ToleranceSearch | None:
    """fit(tolerance=...)'s search, or None; refuses half of one and one with a target."""
    if validate is None and tolerance is None:
        if validate_every is not None:
            raise InputError("fit(validate_every=...) times the validations of a tolerance: pass validate= and "
                             "tolerance= too")
        return None
    if validate is None or tolerance is None:
        raise InputError("fit(validate=..., tolerance=...) go together: a function model -> metric (higher is "
                         "better) and how far the metric may fall below its dense-phase value")
    if target is not None:
        raise InputError(f"fit(target={target}) gives the size, tolerance= finds it: pass one of them")
    if validate_every is not None and not (_is_int(validate_every) and 1 <= validate_every < steps):
        raise InputError(f"fit(validate_every={validate_every!r}): steps between validations, an int from 1 "
                         f"to fewer than the run's {steps} steps")
    return ToleranceSearch(wrapped, validate, tolerance)


def _save(path: Path, epoch: int, history, wrapped, opt, schedule, search) -> None:
    state = {"epoch": epoch, "history": history, "model": wrapped.state_dict(), "optimizer": opt.state_dict(),
             "schedule": schedule.state_dict(), "rng": torch.get_rng_state(),
             "tolerance": search.state_dict() if search is not None else None,
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a run killed while saving keeps the previous checkpoint


def _resume(path: Path, wrapped, opt, schedule, search) -> tuple[int, list[dict]]:
    state = torch.load(path, weights_only=True)
    wrapped.load_state_dict(state["model"])
    if search is not None:
        search.load_state_dict(state["tolerance"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["epoch"], state["history"]
