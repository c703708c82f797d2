"""What a distilled run learns from: ``Config(distill=Distill(...))``."""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

DistillLoss = Union[str, Callable[[Any, Any], torch.Tensor]]


@dataclass(frozen=True)
class Distill:
    r"""The student (the gated model) learns the teacher's outputs as well as the task's
    targets: :func:`distill_loss` is ``weight`` times a distance between the two models'
    outputs on the same inputs, the teacher in eval mode and without gradients.

    * ``loss="mse"``: :math:`\frac{1}{n}\sum_i (s_i - t_i)^2` over every element of every
      floating-point output.
    * ``loss="kl"``: for logits with the classes along dim 1 (``(N, C)``, ``(N, C, H, W)``),
      :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T))` summed over
      the classes and averaged over the rest, ``T = temperature`` (Hinton et al. 2015).
    * a callable ``loss(student_output, teacher_output) -> scalar`` (the task's own loss with
      the teacher's output as the target, say).

    Args:
        teacher: the model to learn from, called with the student's inputs; None: the model
            as it was instrumented (the natural teacher when pruning a trained model). A copy
            is kept, in eval mode, moved to the student's device on use; the module given
            is not changed.
        weight: the term's factor, a finite number >= 0.
        loss: ``"mse"``, ``"kl"`` or a callable, as above.
        temperature: the softmax temperature of ``"kl"``, a finite number > 0.
    """

    teacher: nn.Module | None = None
    weight: float = 1.0
    loss: DistillLoss = "mse"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.teacher is not None and not isinstance(self.teacher, nn.Module):
            raise TypeError(f"Distill.teacher must be None (the model as instrumented) or an nn.Module; got "
                            f"{type(self.teacher).__name__}")
        for name, low, strict in (("weight", 0.0, False), ("temperature", 0.0, True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
                    (value <= low if strict else value < low):
                raise ValueError(f"Distill.{name} must be a finite number {'>' if strict else '>='} {low:g}; "
                                 f"got {value!r}")
        if not (callable(self.loss) or self.loss in ("mse", "kl")):
            raise ValueError(f"Distill.loss must be 'mse', 'kl' or a callable loss(student_output, "
                             f"teacher_output); got {self.loss!r}")

    def with_teacher_of(self, model: nn.Module) -> Distill:
        """This record with its teacher a frozen eval-mode copy (of `model` where it has none)."""
        teacher = copy.deepcopy(self.teacher if self.teacher is not None else model).eval()
        return Distill(teacher.requires_grad_(False), self.weight, self.loss, self.temperature)
