"""The hard-concrete gate of Louizos, Welling & Kingma (2018), Lumos eq. 1-6."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import Config

# (gates, their log_alpha joined, t_l, t_u) -> the uniform noise of their draw, counted
Noise = Callable[[list, torch.Tensor, float, float], torch.Tensor]


class Gate(nn.Module):
    r"""A vector of ``n`` hard-concrete gates, one per channel unit of a group.

    Training (one sample per gate per forward call, shared by the whole batch):

    .. math::
        u \sim \mathcal{U}(t_l, t_u), \quad
        s = \sigma\!\left(\frac{\log u - \log(1-u) + \log\alpha}{\beta}\right), \quad
        z = \min(1, \max(0, s(\zeta - \gamma) + \gamma))

    Schedules (see :class:`lumos_fx.Config`): for the first ``gate_warmup`` training draws
    ``z`` is the deterministic value below (the weights learn before any gate can close);
    then ``beta`` and :math:`(t_l, t_u)` move linearly to ``final_beta`` and
    ``final_noise_range`` over ``anneal_steps`` draws, which with a range shrinking to
    (0.5, 0.5) turns the gates semi-stochastic, then deterministic (the paper's
    semi-stochastic gating).

    Evaluation, and training once :func:`lumos_fx.freeze_gates` has frozen the gate
    (``frozen``: no noise, no draw counted, ``log_alpha`` takes no gradient):

    .. math::
        z = \min(1, \max(0, \sigma(\log\alpha)(\zeta - \gamma) + \gamma))

    Probability that a gate is non-zero, the L0 norm's differentiable surrogate:

    .. math::
        P(z \neq 0) = \sigma\!\left(\log\alpha - \beta \log\frac{-\gamma}{\zeta}\right)

    The noise of draw :math:`k` of a gate with a ``stream`` comes from a generator seeded
    with ``(Config.gate_seed, stream, k)``, not from the global RNG: every process of a
    distributed run draws the same gates at the same step (or the ranks would train
    different sub-networks), and a run repeats whatever else consumes random numbers.
    :func:`lumos_fx.instrument` gives each gate its group id as its stream; the draw count
    is saved with the state dict, so a resumed run continues the sequence.

    Args:
        n: number of gates.
        config: the gate constants ``beta, gamma, zeta, noise_range``, ``init_log_alpha``
            and ``gate_seed``.
        group: name of the channel group the gate controls (for reports).
        stream: this gate's noise stream; None draws from the global RNG.
    """

    def __init__(self, n: int, config: Config, group: str = "", stream: int | None = None) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((n,), float(config.init_log_alpha)))
        self.beta = float(config.beta)
        self.gamma = float(config.gamma)
        self.zeta = float(config.zeta)
        self.noise_range = tuple(float(t) for t in config.noise_range)
        self.warmup = int(config.gate_warmup)
        self.anneal = int(config.anneal_steps)
        self.final_beta = float(config.final_beta if config.final_beta is not None else config.beta)
        self.final_noise_range = tuple(float(t) for t in config.final_noise_range)
        self.group = group
        self.stream = None if stream is None else (int(config.gate_seed), int(stream))
        self.draws = 0
        self.frozen = False
        self._generator: torch.Generator | None = None

    @property
    def n(self) -> int:
        return self.log_alpha.shape[0]

    def _stretch(self, s: torch.Tensor) -> torch.Tensor:
        # hardtanh is the clamp to [0, 1] with a one-kernel backward (clamp's takes five ops)
        return nn.functional.hardtanh(s * (self.zeta - self.gamma) + self.gamma, 0.0, 1.0)

    def _concrete(self, log_alpha: torch.Tensor, u: torch.Tensor, beta: float) -> torch.Tensor:
        """The training sample for noise `u` (eq. 1-2); :class:`GateBank` calls it on the
        log_alpha of all its gates at once."""
        return self._stretch(torch.sigmoid((torch.logit(u) + log_alpha) * (1.0 / beta)))

    def schedule(self) -> tuple[float, tuple[float, float]]:
        """``beta`` and ``(t_l, t_u)`` at this draw: linear from the Config's values to its
        ``final_beta`` / ``final_noise_range`` over ``anneal_steps`` draws after the warm-up."""
        if not self.anneal:
            return self.beta, self.noise_range
        f = min(1.0, max(0, self.draws - self.warmup) / self.anneal)
        (l0, u0), (l1, u1) = self.noise_range, self.final_noise_range
        return self.beta + f * (self.final_beta - self.beta), (l0 + f * (l1 - l0), u0 + f * (u1 - u0))

    @property
    def warming_up(self) -> bool:
        """True while the next training draw is a warm-up draw."""
        return self.draws < self.warmup

    @property
    def held(self) -> bool:
        """True while the last training draw was a warm-up draw (or, before any, the next
        one will be): the step that drew it takes no complexity term."""
        return self.draws <= self.warmup if self.warmup else False

    def sample(self) -> torch.Tensor:
        """A training sample of ``z``: one noise draw per gate (the deterministic value
        during the warm-up)."""
        return _draw([self], self.log_alpha, lambda gates, like, t_l, t_u: self.noise(t_l, t_u))

    def noise(self, t_l: float, t_u: float) -> torch.Tensor:
        """This draw's uniform noise ``u`` in ``(t_l, t_u)``, one per gate; counts the draw."""
        u = torch.empty_like(self.log_alpha).uniform_(t_l, t_u, generator=self._seeded())
        self.draws += 1
        return u

    def _seeded(self) -> torch.Generator | None:
        if self.stream is None:
            return None
        self._generator = _reseeded(self._generator, self.log_alpha.device, (*self.stream, self.draws))
        return self._generator

    def get_extra_state(self) -> dict:
        return {"draws": self.draws, "frozen": self.frozen}

    def set_extra_state(self, state: dict) -> None:
        self.draws = int(state["draws"])
        self.frozen = bool(state.get("frozen", False))  # states saved before freezing existed have no flag

    def eval_value(self) -> torch.Tensor:
        """The deterministic gate used in eval mode and folded into weights by prune()."""
        return self._deterministic(self.log_alpha)

    def _deterministic(self, log_alpha: torch.Tensor) -> torch.Tensor:
        return self._stretch(torch.sigmoid(log_alpha))

    def prob_nonzero(self) -> torch.Tensor:
        """Closed-form ``P(z != 0)`` per gate (differentiable in ``log_alpha``), at the
        current ``beta``. It is the full noise range's: as an annealed range narrows toward
        0.5 the true probability turns into a step with no gradient, and the complexity
        term would stop acting on the gates just as they settle."""
        return self._prob(self.log_alpha)

    def _prob(self, log_alpha: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(log_alpha - self.schedule()[0] * math.log(-self.gamma / self.zeta))

    def forward(self) -> torch.Tensor:
        if self.frozen:
            return self._deterministic(self.log_alpha.detach())
        return self.sample() if self.training else self.eval_value()

    def extra_repr(self) -> str:
        return f"n={self.n}, group={self.group!r}, beta={self.beta:.4g}, gamma={self.gamma}, zeta={self.zeta}"


class GateBank(nn.ModuleDict):
    """The gates of an instrumented model (``wrapped.lumos_gates``), by key, computed together.

    One call returns every gate's ``z`` (a tuple in key order) from one pass over all their
    ``log_alpha`` joined, for a handful of tensor ops per step instead of a handful per
    gate, which on a small model is most of what gating costs. The gates share one
    :class:`Config` and so one schedule; each counts its own draws, as it does alone.

    The noise of the bank's draw :math:`k` is one uniform vector over all its gates, from a
    generator seeded with ``(Config.gate_seed, k)`` (the global RNG where the gates have no
    stream): one seeding per step, not one per gate, and still the same on every process
    of a distributed run and continued by a resumed one. A :class:`Gate` called alone draws
    from its own stream instead, so its samples are not the bank's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._generator: torch.Generator | None = None
        # Set by freeze_gates(wrapped, optimizer): frozen gates still hand log_alpha a zero
        # gradient, since DistributedDataParallel waits for one from every parameter it reduces.
        self.frozen_in_graph = False
        # What freeze_gates' settling did (lumos_fx.prune.settled_record), saved with the state dict.
        self.settled: dict | None = None
        self.register_load_state_dict_pre_hook(_extra_state_default)

    def get_extra_state(self) -> dict:
        return {"settled": self.settled}

    def set_extra_state(self, state: dict) -> None:
        self.settled = state["settled"]

    # The draw counts and the seeded generator are Python state that moves every step: a
    # compiled model would guard on them and recompile each step, so the bank runs eagerly
    # and hands its z to the compiled graph.
    @torch.compiler.disable
    def forward(self) -> tuple[torch.Tensor, ...]:
        gates = list(self.values())
        joined = torch.cat([g.log_alpha for g in gates])
        if gates[0].frozen:
            z = gates[0]._deterministic(joined.detach())
            if self.frozen_in_graph:
                z = z + joined * 0.0
        else:
            z = _draw(gates, joined, self._noise) if self.training else gates[0]._deterministic(joined)
        return z.split([g.n for g in gates])

    def _noise(self, gates: list[Gate], like: torch.Tensor, t_l: float, t_u: float) -> torch.Tensor:
        """This draw's noise for all of `gates` joined (shaped `like`); counts the draw."""
        first = gates[0]
        generator = None
        if first.stream is not None:
            generator = self._generator = _reseeded(self._generator, like.device, (first.stream[0], first.draws))
        for g in gates:
            g.draws += 1
        return torch.empty_like(like).uniform_(t_l, t_u, generator=generator)

    def open_joined(self) -> torch.Tensor:
        """1 where a gate's eval value is open, else 0, joined in key order: what frozen
        gates (:func:`lumos_fx.freeze_gates`) keep, in place of :meth:`prob_joined`."""
        gates = list(self.values())
        return (gates[0]._deterministic(torch.cat([g.log_alpha for g in gates]).detach()) > 0).to(gates[0].log_alpha)

    def prob_joined(self) -> torch.Tensor:
        """:meth:`Gate.prob_nonzero` of every gate, joined in key order, in one pass."""
        gates = list(self.values())
        return gates[0]._prob(torch.cat([g.log_alpha for g in gates]))

    @property
    def held(self) -> bool:
        """:attr:`Gate.held` of the gates (all alike)."""
        return any(g.held for g in self.values())

    @property
    def frozen(self) -> bool:
        """Whether :func:`lumos_fx.freeze_gates` froze the gates (all alike)."""
        return any(g.frozen for g in self.values())


def _extra_state_default(module, state_dict, prefix, *args) -> None:
    """A state dict saved before the bank had a state of its own loads as unsettled."""
    state_dict.setdefault(prefix + "_extra_state", {"settled": None})


def _reseeded(generator: torch.Generator | None, device: torch.device, key: tuple[int, ...]) -> torch.Generator:
    """`generator` (a new one where it is None or on another device) seeded from `key`."""
    if generator is None or generator.device != device:
        generator = torch.Generator(device=device)
    # hash() of a tuple of ints is the same in every process (only str hashing is salted).
    return generator.manual_seed(hash(key) & (2 ** 63 - 1))


def _draw(gates: list[Gate], log_alpha: torch.Tensor, noise: Noise) -> torch.Tensor:
    """One training draw of `gates` (alike in Config, so in schedule and draw count) from
    their `log_alpha` joined: the deterministic value during the warm-up, else the
    hard-concrete sample on ``noise(gates, log_alpha, t_l, t_u)``, which counts the draw."""
    first = gates[0]
    if first.warming_up:
        for g in gates:
            g.draws += 1
        return first._deterministic(log_alpha)
    beta, (t_l, t_u) = first.schedule()
    return first._concrete(log_alpha, noise(gates, log_alpha, t_l, t_u), beta)
