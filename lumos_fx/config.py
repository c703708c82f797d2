"""Everything tunable in lumos_fx, in one dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import torch

LeafSpec = Union[str, type, Callable[[torch.nn.Module, str], bool]]


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
    * ``gate_seed`` -- seeds the training gates' noise, drawn per gate and step (see
      :class:`lumos_fx.Gate`): identical on every process of a distributed run.

    Regulariser: ``lam`` multiplies the expected fraction of prunable parameters still alive
    in :func:`lumos_fx.complexity_loss`; ``gate_lr`` is the default learning rate of the
    gates in :func:`lumos_fx.param_groups` (gates take no weight decay).

    Budget (see :mod:`lumos_fx.budget`): ``target_params`` is the fraction of prunable
    parameters to keep (``0 < t < 1``), or ``target_flops`` the fraction of the forward
    FLOPs of the gated layers (one of the two); with it, :func:`lumos_fx.complexity_loss`
    is a Lagrangian controller's term and ``lam`` is not used. ``budget_warmup`` steps lower
    the target from 1 to the budget; ``budget_lr`` is the multipliers' learning rate;
    prune() snaps the gates to the target when they miss it by more than ``budget_tolerance``.

    Tracer: ``leaf_modules`` are modules torch.fx must not trace into, given as qualified
    names (``"encoder.block1"``), classes, or a predicate ``f(module, qualified_name)``.
    A leaf with no registered rule keeps every channel it touches.

    Fine-tuning: ``frozen`` names modules (the same three ways) whose weights stay as they
    are (``requires_grad=False`` in the instrumented model, so :func:`lumos_fx.param_groups`
    leaves them out); their gates still train and prune() cuts them like any others.
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
    budget_warmup: int = 200
    budget_lr: float = 0.05
    budget_tolerance: float = 0.01
    leaf_modules: Sequence[LeafSpec] = field(default_factory=tuple)
    frozen: Sequence[LeafSpec] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not (self.gamma < 0.0 < 1.0 < self.zeta):
            raise ValueError(f"Config needs gamma < 0 < 1 < zeta, got gamma={self.gamma}, zeta={self.zeta}")
        if self.beta <= 0:
            raise ValueError(f"Config.beta must be positive, got {self.beta}")
        for name in ("noise_range", "final_noise_range"):
            t_l, t_u = getattr(self, name)
            if not (0.0 < t_l <= t_u < 1.0):
                raise ValueError(f"Config.{name} must satisfy 0 < t_l <= t_u < 1, got {getattr(self, name)}")
        if self.gate_warmup < 0 or self.anneal_steps < 0 or (self.final_beta is not None and self.final_beta <= 0):
            raise ValueError("Config needs gate_warmup >= 0, anneal_steps >= 0 and a positive final_beta")
        for name, what in (("target_params", "prunable parameters"), ("target_flops", "FLOPs of the gated layers")):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"Config.{name} is the fraction of {what} to keep, 0 < {name} < 1; got {value}")
        if self.target_params is not None and self.target_flops is not None:
            raise ValueError("Config takes one budget: target_params or target_flops, not both")
        if self.budget_warmup < 0 or self.budget_lr <= 0 or not 0 <= self.budget_tolerance < 1:
            raise ValueError("Config needs budget_warmup >= 0, budget_lr > 0 and 0 <= budget_tolerance < 1")
        if not math.isfinite(self.init_log_alpha):
            raise ValueError("Config.init_log_alpha must be finite")

    @property
    def budget(self) -> tuple[str, float] | None:
        """``("params", t)`` or ``("flops", t)`` for a budget, else None."""
        if self.target_params is not None:
            return "params", float(self.target_params)
        if self.target_flops is not None:
            return "flops", float(self.target_flops)
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
