r"""A tolerance instead of a size: the budget's target, searched while the model trains.

With ``fit(..., validate=f, tolerance=d)`` the user says how much of a validation metric
:math:`m = f(\text{model})` (higher is better) they give up, not how large the model is.
:class:`ToleranceSearch` moves the budget's target :math:`t` at every validation:

- the first validation comes after training with every gate open and no pressure (the
  dense phase, which lasts at least as long as the gates' warm-up, ``Config.gate_warmup``:
  a target that fell while the gates could not follow would press all at once when they
  can); the target starts falling from 1;
- the reference :math:`m^\ast` is the best metric of any validation so far (the first:
  the dense phase's). Held against the best the run has shown, not against an early value
  alone, a model that was still learning when the dense phase ended does not excuse the
  loss of what it learnt later;
- the model *holds* when :math:`m \ge m^\ast - d`. Then its state is kept (unless a kept
  state is as small and as good), and the target falls by a step :math:`s` in
  :math:`\log t`: :math:`t \leftarrow t\,e^{-s}`, :math:`s` first :math:`-\log r`;
- when it does not hold, the target stays, once: a model dips while its gates close and
  mostly recovers by the next validation (on the CFD surrogate a drop of the target cost
  0.005-0.01 of R^2 that the next 100 steps won back). When it does not hold twice in a
  row, the target backs off by the step, :math:`t \leftarrow t\,e^{s}`, and the step
  halves; two validations in a row that hold double it again (up to the first): the
  search closes in on the size where the metric stops holding, and follows it down as
  training goes on.

:meth:`ToleranceSearch.finish` loads the smallest kept state still within :math:`d` of the
final reference into the model and sets the budget's target to what its eval gates keep, so that prune()'s snap moves no gate
and the pruned model is the validated one (widths that ``Config.round_to`` rounds up are
the only change).

For a metric where lower is better, such as an MSE, validate :math:`-\log \mathrm{MSE}`: a
tolerance of :math:`\log 1.1` then allows an MSE up to 10% above the reference's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import fx

from .budget import attach_budget, budget_of, eval_kept
from .errors import InputError
from .plan import GATES, plan_of

FACTOR = 0.7  # the target's first steps: 1, 0.7, 0.49, ... (5% after nine holding validations)
SMALLEST = 1e-3  # the target never falls below this fraction


class ToleranceSearch:
    """The budget target of a training run that keeps `validate(model)` within `tolerance` of
    its dense-phase value (see the module doc); call :meth:`validated` at every validation
    (the last at the end of training) and then :meth:`finish`.

    Args:
        wrapped: an instrumented model; its budget (parameters, FLOPs) is the one searched,
            or, without one, a parameter budget is attached.
        validate: ``validate(model) -> float``, higher is better; called in eval mode,
            without gradients.
        tolerance: the metric may fall this much below the reference, a number >= 0.
        factor: the target's first steps, 0 < factor < 1.
    """

    def __init__(self, wrapped: fx.GraphModule, validate: Callable[[torch.nn.Module], float], tolerance: float,
                 factor: float = FACTOR) -> None:
        if not callable(validate):
            raise InputError(f"validate={validate!r}: pass a function model -> metric (higher is better)")
        if not _is_number(tolerance) or tolerance < 0:
            raise InputError(f"tolerance={tolerance!r}: how far the metric may fall below its dense-phase value, "
                             "a finite number >= 0")
        if not _is_number(factor) or not 0 < factor < 1:
            raise InputError(f"factor={factor!r}: the target's first steps, a number 0 < factor < 1")
        budget = budget_of(wrapped)
        if budget is None:
            # The Config needs a target below 1; the search sets the live one, Budget.target.
            attach_budget(wrapped, replace(plan_of(wrapped).config, target_params=factor, budget_warmup=0))
            budget = budget_of(wrapped)
        elif budget.kind == "latency":
            raise InputError("a tolerance searches a parameter or FLOP budget; the model was instrumented with "
                             "Config(target_latency=...): instrument it with target_params or target_flops, or none")
        self.wrapped, self.validate, self.tolerance = wrapped, validate, float(tolerance)
        self.budget = budget
        budget.target, budget.warmup = 1.0, 0  # no pressure until the reference
        self.first_step = self.step = -math.log(factor)  # in log target
        self.holds = self.misses = 0  # validations in a row that held, that did not
        self.reference: float | None = None
        # The states that held, none as large and as bad as another: state dict, kept, metric.
        self.kept_states: list[dict] = []
        self.log: list[dict] = []
        self.chosen: dict | None = None  # what finish() loaded

    def validated(self) -> dict:
        """Validate the model now, move the target, keep the state if it is the smallest that
        held; returns the record (metric, kept, target before and after, held)."""
        metric = self._metric()
        kept = eval_kept(self.wrapped)
        record = {"metric": metric, "kept": kept, "target": self.budget.target}
        warming_up = getattr(self.wrapped, GATES).held
        if self.reference is None or warming_up:
            with torch.no_grad():  # the dense phase's pull toward 1 is not the search's
                self.budget.lambda_1.zero_()
                self.budget.lambda_2.zero_()
        self.reference = metric if self.reference is None else max(self.reference, metric)
        held = metric >= self.reference - self.tolerance
        if held or warming_up:
            self._keep(kept, metric)
        if warming_up:
            target = self.budget.target
        elif held:
            self.holds, self.misses = self.holds + 1, 0
            if self.holds % 2 == 0:
                self.step = min(self.first_step, 2 * self.step)
            target = self.budget.target * math.exp(-self.step)
        else:
            self.holds, self.misses = 0, self.misses + 1
            target = self.budget.target
            if self.misses >= 2:
                target *= math.exp(self.step)
                self.step /= 2
        self.budget.target = min(1.0, max(SMALLEST, target))
        record.update(held=held, next_target=self.budget.target)
        self.log.append(record)
        return record

    def _keep(self, kept: float, metric: float) -> None:
        if any(s["kept"] <= kept and s["metric"] >= metric for s in self.kept_states):
            return
        self.kept_states = [s for s in self.kept_states if not (s["kept"] >= kept and s["metric"] <= metric)]
        state = {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v
                 for k, v in self.wrapped.state_dict().items()}
        self.kept_states.append({"state": state, "kept": kept, "metric": metric})

    def finish(self) -> dict:
        """Load the smallest kept state within the tolerance of the final reference into the
        model (validate the end of training first), its budget's target set to what it keeps;
        returns that state's kept fraction and metric, and the reference."""
        best = min((s for s in self.kept_states if s["metric"] >= self.reference - self.tolerance),
                   key=lambda s: s["kept"])  # the best validation's state is always one
        self.wrapped.load_state_dict(best["state"])
        self.budget.target = max(SMALLEST, best["kept"])
        self.chosen = {"kept": best["kept"], "metric": best["metric"], "reference": self.reference}
        return self.chosen

    def state_dict(self) -> dict:
        return {"target": self.budget.target, "step": self.step, "holds": self.holds, "misses": self.misses,
                "reference": self.reference, "kept_states": self.kept_states, "log": self.log, "chosen": self.chosen}

    def load_state_dict(self, state: dict) -> None:
        self.budget.target, self.step = state["target"], state["step"]
        self.holds, self.misses = state["holds"], state["misses"]
        self.reference, self.kept_states, self.log = state["reference"], state["kept_states"], state["log"]
        self.chosen = state.get("chosen")  # made by a fit(finetune=...) before its fine-tune

    def _metric(self) -> float:
        was_training = self.wrapped.training
        self.wrapped.eval()
        try:
            with torch.no_grad():
                value = self.validate(self.wrapped)
        finally:
            self.wrapped.train(was_training)
        if not _is_number(value):
            raise InputError(f"validate(model) returned {value!r}; it must return a finite number "
                             "(higher is better; for an error metric return its negative log)")
        return float(value)


def _is_number(v) -> bool:
    """A finite real (a numpy scalar counts: numbers.Real) or a one-element finite tensor."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) or (
        isinstance(v, torch.Tensor) and v.numel() == 1 and bool(torch.isfinite(v)))
