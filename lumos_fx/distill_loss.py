"""The distillation term: the gated model against its teacher on the same inputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_flatten

from .errors import InputError
from .plan import instrumented, plan_of


def distill_loss(wrapped: fx.GraphModule, inputs: tuple, output: Any) -> torch.Tensor:
    """The distillation term of a model instrumented with ``Config(distill=Distill(...))``:
    `output` is ``wrapped(*inputs)``, the teacher is called on `inputs`. Add it to the loss::

        out = wrapped(x)
        loss = task_loss(out, y) + lumos_fx.complexity_loss(wrapped) + lumos_fx.distill_loss(wrapped, (x,), out)

    :func:`lumos_fx.fit` adds it itself.

    Raises:
        InputError: the model has no ``Config.distill``, or the teacher's output does not
            pair with the student's (another structure or shape), or ``"kl"`` on an output
            with no class dim.
    """
    distill = plan_of(instrumented(wrapped)).config.distill
    if distill is None:
        raise InputError("distill_loss: the model was instrumented without a teacher; instrument it with "
                         "lumos_fx.Config(distill=lumos_fx.Distill(...))")
    student, _ = tree_flatten(output)
    student = [t for t in student if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not student:
        raise InputError("distill_loss: the model's output holds no floating-point tensor to distill")
    teacher = _on_device(distill.teacher, student[0].device)
    with torch.no_grad():
        taught = teacher(*inputs)
    if callable(distill.loss):
        return distill.weight * distill.loss(output, taught)
    reference, _ = tree_flatten(taught)
    reference = [t for t in reference if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if [t.shape for t in reference] != [s.shape for s in student]:
        raise InputError(f"distill_loss: the teacher's outputs {[list(t.shape) for t in reference]} do not pair "
                         f"with the model's {[list(s.shape) for s in student]}: give a teacher with the model's "
                         "outputs, or Distill(loss=<a callable>) that pairs them")
    term = _kl if distill.loss == "kl" else _mse
    return distill.weight * sum(term(s, t, distill.temperature) for s, t in zip(student, reference)) / len(student)


def _on_device(teacher: nn.Module, device: torch.device) -> nn.Module:
    """The teacher, moved to `device` where its weights are elsewhere (the student moved)."""
    first = next(iter(teacher.parameters()), None)
    first = first if first is not None else next(iter(teacher.buffers()), None)
    return teacher.to(device) if first is not None and first.device != device else teacher


def _mse(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    return nn.functional.mse_loss(student, teacher.to(student.dtype))


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    if student.dim() < 2:
        raise InputError(f"Distill(loss='kl') takes logits with the classes along dim 1; the output has shape "
                         f"{list(student.shape)}: use loss='mse' or a callable")
    log_s = torch.log_softmax(student / temperature, dim=1)
    log_t = torch.log_softmax(teacher.to(student.dtype) / temperature, dim=1)
    per_item = nn.functional.kl_div(log_s, log_t, log_target=True, reduction="none").sum(1)
    return per_item.mean() * temperature ** 2
