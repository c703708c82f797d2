"""Everything tunable in lumos_fx, in one dataclass."""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Sequence, Union

import torch

from .distill import Distill
from .errors import InputError

LeafSpec = Union[str, type, Callable[[torch.nn.Module, str], bool]]


def check_module_names(specs, model: torch.nn.Module, field: str) -> None:
    """Every qualified name among `specs` names a submodule of `model`, else an InputError
    that says which do not and which names are near them."""
    names = [n for n, _ in model.named_modules() if n]
    unknown = [s for s in specs if isinstance(s, str) and s not in names]
    if not unknown:
        return
    hints = "; ".join(f"'{s}': did you mean {difflib.get_close_matches(s, names, n=3)}?"
                      for s in unknown if difflib.get_close_matches(s, names, n=3))
    raise InputError(
        f"Config.{field} names modules {type(model).__name__} does not have: {unknown}"
        f"{f' ({hints})' if hints else ''}. Its modules are named as model.named_modules() names them; "
        f"top level: {[n for n, _ in model.named_children()]}."
    )


def module_matches(spec: LeafSpec, module: torch.nn.Module, qualname: str) -> bool:
    """Whether `spec` (a qualified name, a class, or a predicate) names this module."""
    if isinstance(spec, str):
        return spec == qualname
    if isinstance(spec, type):
        return isinstance(module, spec)
    return bool(spec(module, qualname))


@dataclass
class Config:
    """Settings of the gates, the regulariser and the tracer.

    Gate constants (Louizos, Welling & Kingma 2018; Lumos eq. 1-3):

    * ``beta`` -- temperature of the concrete distribution.
    * ``gamma < 0 < 1 < zeta`` -- the stretch interval; stretching past [0, 1] and clamping
      back gives the gate exact zeros and ones.
    * ``noise_range = (t_l, t_u)`` -- the range of the uniform noise ``u``. The paper anneals
      it toward 0.5, which makes the training gate semi-stochastic, then deterministic.
    * ``init_log_alpha`` -- initial ``log_alpha`` of every gate. The eval gate is exactly 1
      for ``log_alpha >= open_threshold`` (2.398 with the default constants), so the
      default 3.0 makes a freshly instrumented model compute what the original computes.
    * ``gate_warmup`` -- training steps (forward calls) with every gate at its deterministic
      value and no complexity term: the weights learn first (inputs that only matter
      together, like the components of a vector, are learnt before noise can hide them).
    * ``anneal_steps``, ``final_beta``, ``final_noise_range`` -- after the warm-up, ``beta``
      and ``noise_range`` move linearly to these over ``anneal_steps`` (0: no annealing).
    * ``gate_seed`` -- seeds the training gates' noise, one draw per step for all the gates
      of a model (see :class:`lumos_fx.gate.GateBank`): identical on every process of a
      distributed run.

    Regulariser: ``lam`` multiplies the expected fraction of prunable parameters still alive
    in :func:`lumos_fx.complexity_loss`; ``gate_lr`` is the default learning rate of the
    gates in :func:`lumos_fx.param_groups` (gates take no weight decay).

    Budget (see :mod:`lumos_fx.budget`): ``target_params`` is the fraction of prunable
    parameters to keep (``0 < t < 1``), or ``target_flops`` the fraction of the forward
    FLOPs of the gated layers, or ``target_latency`` the fraction of the dense model's
    latency (one of the three); with it, :func:`lumos_fx.complexity_loss` is a Lagrangian
    controller's term and ``lam`` is not used. A latency budget is measured on the device
    the model is on when instrumented, at ``latency_batch`` (None: the example inputs' batch;
    an int repeats them along dim 0 to that batch), each layer's latency over its widths
    kept in a JSON file (see :mod:`lumos_fx.latency`). ``budget_warmup`` steps lower
    the target from 1 to the budget; ``budget_lr`` is the multipliers' learning rate;
    prune() snaps the gates to the target when they miss it by more than ``budget_tolerance``.

    Widths: ``round_to`` makes every pruned width a multiple of it (or the full width;
    1: any width), per layer overridden by ``round_to_modules``, a dict from specs (the three
    kinds ``leaf_modules`` takes) to ints: ``{"head": 1, nn.Conv2d: 16}`` (see
    :mod:`lumos_fx.rounding`).

    Tracer: ``leaf_modules`` are modules torch.fx must not trace into, given as qualified
    names (``"encoder.block1"``), classes, or a predicate ``f(module, qualified_name)``.
    A leaf with no registered rule keeps every channel it touches. With ``auto_leaves`` (the
    default), a submodule fx cannot trace into becomes a leaf of its own, the reason in
    summary(), and the rest of the model is traced and cut; without, it is a TraceError.

    Fine-tuning: ``frozen`` names modules (the same three ways) whose weights stay as they
    are (``requires_grad=False`` in the instrumented model, so :func:`lumos_fx.param_groups`
    leaves them out); their gates still train and prune() cuts them like any others.

    Distillation: ``distill`` (a :class:`lumos_fx.Distill`) gives the model a teacher whose
    outputs it learns as well as the targets (:func:`lumos_fx.distill_loss`); by default the
    teacher is the model as instrumented, frozen.

    Every field is checked when a Config is made (and by ``dataclasses.replace``): a value
    of the wrong type raises TypeError, one out of range ValueError, each naming the field,
    the value given and what is allowed.
    """

    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1
    noise_range: tuple[float, float] = (1e-6, 1.0 - 1e-6)
    init_log_alpha: float = 3.0
    gate_seed: int = 0
    gate_warmup: int = 0
    anneal_steps: int = 0
    final_beta: float | None = None
    final_noise_range: tuple[float, float] = (0.5, 0.5)
    lam: float = 1.0
    gate_lr: float = 0.1
    target_params: float | None = None
    target_flops: float | None = None
    target_latency: float | None = None
    latency_batch: int | None = None
    budget_warmup: int = 200
    budget_lr: float = 0.05
    budget_tolerance: float = 0.01
    leaf_modules: Sequence[LeafSpec] = field(default_factory=tuple)
    frozen: Sequence[LeafSpec] = field(default_factory=tuple)
    auto_leaves: bool = True
    round_to: int = 1
    round_to_modules: Mapping[LeafSpec, int] = field(default_factory=dict)
    distill: Distill | None = None

    def __post_init__(self) -> None:
        """Check every field, so that a bad setting fails here, naming itself, and not as a
        NaN or a raw error deep in training (``dataclasses.replace`` checks again)."""
        for name, rule in _NUMBERS.items():
            _check_number(name, getattr(self, name), rule)
        for name in ("noise_range", "final_noise_range"):
            _check_noise_range(name, getattr(self, name))
        given = [n for n in ("target_params", "target_flops", "target_latency") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"Config takes one budget (target_params, target_flops or target_latency), not both: "
                             f"got {' and '.join(given)}")
        for name in ("leaf_modules", "frozen"):
            _check_specs(name, getattr(self, name))
        if not isinstance(self.auto_leaves, bool):
            raise TypeError(f"Config.auto_leaves must be True or False, got {self.auto_leaves!r}")
        _check_multiples(self.round_to_modules)
        if self.distill is not None and not isinstance(self.distill, Distill):
            raise TypeError(f"Config.distill must be None or a lumos_fx.Distill(teacher=..., weight=..., loss=...); "
                            f"got {self.distill!r}")

    @property
    def budget(self) -> tuple[str, float] | None:
        """``("params", t)``, ``("flops", t)`` or ``("latency", t)`` for a budget, else None."""
        for kind in ("params", "flops", "latency"):
            target = getattr(self, f"target_{kind}")
            if target is not None:
                return kind, float(target)
        return None

    @property
    def open_threshold(self) -> float:
        """``log_alpha`` at and above which the eval gate is exactly 1."""
        q = (1.0 - self.gamma) / (self.zeta - self.gamma)
        return math.log(q / (1.0 - q))

    @property
    def closed_threshold(self) -> float:
        """``log_alpha`` at and below which the eval gate is exactly 0."""
        q = -self.gamma / (self.zeta - self.gamma)
        return math.log(q / (1.0 - q))


class _Rule(NamedTuple):
    """What a numeric field of :class:`Config` accepts: the kind of number (bools are not
    numbers here), a test of its value, what to tell the user, and whether None is allowed."""

    kind: type
    ok: Callable[[Any], bool]
    allowed: str
    optional: bool = False


def _fraction(v) -> bool:
    """A budget keeps part of the model: not nothing, not everything."""
    return 0.0 < v < 1.0


_NUMBERS: dict[str, _Rule] = {
    "beta": _Rule(numbers.Real, lambda v: v > 0, "a finite number > 0 (the concrete temperature)"),
    "gamma": _Rule(numbers.Real, lambda v: v < 0, "a finite number < 0 (the stretch needs gamma < 0 < 1 < zeta)"),
    "zeta": _Rule(numbers.Real, lambda v: v > 1, "a finite number > 1 (the stretch needs gamma < 0 < 1 < zeta)"),
    "init_log_alpha": _Rule(numbers.Real, lambda v: True, "a finite number"),
    "gate_seed": _Rule(numbers.Integral, lambda v: True, "an int"),
    "gate_warmup": _Rule(numbers.Integral, lambda v: v >= 0, "an int >= 0 (training steps)"),
    "anneal_steps": _Rule(numbers.Integral, lambda v: v >= 0, "an int >= 0 (training steps; 0: no annealing)"),
    "final_beta": _Rule(numbers.Real, lambda v: v > 0, "None (keep beta) or a finite number > 0", optional=True),
    "lam": _Rule(numbers.Real, lambda v: v >= 0, "a finite number >= 0 (0: no complexity term)"),
    "gate_lr": _Rule(numbers.Real, lambda v: v > 0, "a finite number > 0"),
    "target_params": _Rule(numbers.Real, _fraction, "None or the fraction of prunable parameters to keep, "
                           "0 < target_params < 1", optional=True),
    "target_flops": _Rule(numbers.Real, _fraction, "None or the fraction of FLOPs of the gated layers to keep, "
                          "0 < target_flops < 1", optional=True),
    "target_latency": _Rule(numbers.Real, _fraction, "None or the fraction of the dense model's latency to keep, "
                            "0 < target_latency < 1", optional=True),
    "latency_batch": _Rule(numbers.Integral, lambda v: v >= 1, "None (the example's batch) or an int >= 1",
                           optional=True),
    "budget_warmup": _Rule(numbers.Integral, lambda v: v >= 0, "an int >= 0 (training steps)"),
    "budget_lr": _Rule(numbers.Real, lambda v: v > 0, "a finite number > 0"),
    "budget_tolerance": _Rule(numbers.Real, lambda v: 0 <= v < 1, "a finite number, 0 <= budget_tolerance < 1"),
    "round_to": _Rule(numbers.Integral, lambda v: v >= 1, "an int >= 1 (1: pruned widths are not rounded)"),
}


def _check_number(name: str, value: Any, rule: _Rule) -> None:
    """TypeError for a value that is not a number of the rule's kind, ValueError for one it refuses."""
    if value is None and rule.optional:
        return
    if isinstance(value, bool) or not isinstance(value, rule.kind):
        raise TypeError(f"Config.{name} must be {rule.allowed}; got {value!r} ({type(value).__name__})")
    finite = isinstance(value, numbers.Integral) or math.isfinite(value)  # a big int has no float
    if not (finite and rule.ok(value)):
        raise ValueError(f"Config.{name} must be {rule.allowed}; got {value!r}")


def _check_noise_range(name: str, pair: Any) -> None:
    """A noise range is ``(t_l, t_u)`` with ``0 < t_l <= t_u < 1``: the uniform noise must
    stay inside (0, 1), where its logit is finite."""
    numeric = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
        isinstance(t, numbers.Real) and not isinstance(t, bool) for t in pair)
    if not numeric:
        raise TypeError(f"Config.{name} must be a pair (t_l, t_u) of numbers; got {pair!r}")
    t_l, t_u = pair
    if not (0.0 < t_l <= t_u < 1.0):
        raise ValueError(f"Config.{name} must satisfy 0 < t_l <= t_u < 1, got {pair!r}")


def _check_specs(name: str, specs: Any) -> None:
    """``leaf_modules`` and ``frozen`` are collections of specs (see :func:`module_matches`).
    A bare spec would be iterated (a string letter by letter), so it is refused with the
    list to write instead."""
    if not isinstance(specs, (list, tuple, set, frozenset)):
        shown = repr(specs) if isinstance(specs, str) else getattr(specs, "__name__", repr(specs))
        fix = f": write {name}=[{shown}]" if _spec_problem(specs) is None else ""
        raise TypeError(f"Config.{name} must be a list of module specs (qualified names, nn.Module classes "
                        f"or predicates f(module, name)); got {specs!r}{fix}")
    for i, spec in enumerate(specs):
        problem = _spec_problem(spec)
        if problem is not None:
            raise TypeError(f"Config.{name}[{i}] {problem}")


def _check_multiples(overrides: Any) -> None:
    """``round_to_modules`` maps module specs to multiples: ``{"head": 1, nn.Conv2d: 16}``."""
    if not isinstance(overrides, Mapping):
        raise TypeError(f"Config.round_to_modules must be a dict from module specs (qualified names, nn.Module "
                        f"classes or predicates f(module, name)) to ints >= 1; got {overrides!r}")
    for spec, multiple in overrides.items():
        problem = _spec_problem(spec)
        if problem is not None:
            raise TypeError(f"Config.round_to_modules key {spec!r} {problem}")
        _check_number(f"round_to_modules[{spec!r}]", multiple, _NUMBERS["round_to"])


def _spec_problem(spec: Any) -> str | None:
    """What is wrong with one spec, or None for a qualified name, a module class or a predicate."""
    if isinstance(spec, type):
        if issubclass(spec, torch.nn.Module):
            return None
        return (f"is the class {spec.__name__}, which is not an nn.Module; a spec is a qualified name, an "
                "nn.Module subclass, or a predicate f(module, name)")
    if isinstance(spec, str) or callable(spec):
        return None
    return (f"must be a qualified name (str), an nn.Module subclass, or a predicate f(module, name); "
            f"got {spec!r} ({type(spec).__name__})")
