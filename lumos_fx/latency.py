r"""A latency budget: every gated layer's latency measured over its widths on the model's
device, every other op's share of the dense model's time, and the model's expected latency
as a function of the gates.

For ``Config(target_latency=t)``, instrument() runs the traced dense model at
``Config.latency_batch`` and on a batch of one under an :class:`torch.fx.Interpreter` that
times every node, and times each layer that a gate narrows (a linear layer or an ungrouped
convolution: the calls with a functional form, see
:meth:`lumos_fx.rules.api.ModuleRule.folded`) alone, on inputs of the size it sees, with
its weight cut to the fractions :data:`FRACTIONS` of each gated dim. The expected latency is

.. math::
    \hat T = T_1 + c \Big(T_0 + \sum_n T_n \hat k_n
        + \sum_\ell \tau_\ell(\hat w_{\ell,\mathrm{out}}, \hat w_{\ell,\mathrm{in}})
        - \tau_\ell^{\min}\Big)

- :math:`T_1`: the dense model on one sample, the ops' dispatch, which no cut shrinks;
- :math:`T_n`: node :math:`n`'s time in the dense model beyond its time on one sample, and
  :math:`\hat k_n` the expected kept fraction of its output's channels (an activation, a
  norm, a pooling: its time scales with them); :math:`T_0` the same for the nodes whose
  output no gate narrows;
- :math:`\tau_\ell`: layer :math:`\ell`'s table, interpolated bilinearly at the expected
  kept sizes :math:`\hat w_\ell` of its output and input dims
  (:meth:`lumos_fx.costs.CostModel.widths`) and made monotone in both (a measurement's
  noise must not reward a wider layer), less its time at the smallest widths;
- :math:`c = (T_\mathrm{dense} - T_1) / (\ldots)_\mathrm{full}`: the interpreter's own
  overhead out, so that :math:`\hat T = T_\mathrm{dense}` at full width.

It is differentiable in the gates' probabilities, as the FLOP count is; the budget's
controller and prune()'s snap drive :math:`\hat T / T_\mathrm{dense}` to ``t`` (see
:mod:`lumos_fx.budget`). The model is the dense model's own cost structure, measured once;
what it cannot see is a kernel whose speed depends on the data or on cache reuse between
ops (results/latency_budget.md gives how close it lands on the zoo).

Layer tables are kept in a JSON file, ``$LUMOS_FX_LATENCY_CACHE`` or else
``lumos_fx/latency.json`` under ``$XDG_CACHE_HOME`` (default ``~/.cache``), keyed by device,
thread count, dtype and the layer's shapes, so a layer is timed once per machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import fx

from .errors import InputError
from .fxutil import normalize_dim, shape_of
from .plan import Plan
from .rules import REGISTRY

FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)  # of each gated dim, where a layer is timed
_POINT_SECONDS = 0.02  # time spent on one width of one layer (at least 3 calls)


@dataclass(frozen=True)
class LayerTable:
    """One layer call's measured latency (seconds) over the sizes of its weight's output
    (dim 0) and input (dim 1) channels; ``out_term`` / ``in_term`` index the gated dims in
    :meth:`~lumos_fx.costs.CostModel.widths` (None: that dim is not gated, one size)."""

    node: str
    out_sizes: tuple[int, ...]
    in_sizes: tuple[int, ...]
    seconds: tuple[tuple[float, ...], ...]
    out_term: int | None
    in_term: int | None

    @property
    def span(self) -> float:
        """What the table's widths change: its time at full width less at the smallest."""
        return self.seconds[-1][-1] - self.seconds[0][0]


class LatencyModel:
    """Expected latency of the model at the latency batch, in seconds (``total``: the dense
    model's): the :class:`~lumos_fx.plan.Cost` a latency budget counts in."""

    def __init__(self, widths, layers: list[LayerTable], scaling: dict[int, np.ndarray], fixed: float,
                 floor: float, dense: float, batch: int) -> None:
        self.widths_of = widths  # the CostModel whose widths() the layers' terms index
        self.layers = layers
        self.scaling = scaling  # group id -> per unit, seconds of the ops its channels make up
        self.fixed = fixed
        self.floor = floor
        self.batch = batch
        self.total = float(dense)
        full = fixed + sum(float(v.sum()) for v in scaling.values()) + sum(t.span for t in layers)
        self.calibration = (dense - floor) / full if full > 0 else 1.0
        # The share of the expected savings that timed cuts realised (lumos_fx.latency_check):
        # found at instrument and at every prune, kept here, in the plan that copies share.
        self.savings_scale = 1.0
        self._on: dict = {}

    def expected(self, probs: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.joined(torch.cat([probs[g] for g in self.widths_of.order]))

    def joined(self, p: torch.Tensor) -> torch.Tensor:
        """Expected seconds for the gates' probabilities joined in group order."""
        t = self._tensors(p)
        seconds = t.scaling @ p + self.fixed
        if self.layers:
            sizes = torch.cat([self.widths_of.widths(p), p.new_ones(1)])  # the last: an ungated dim's fraction
            f_out, f_in = sizes[t.out_index] * t.out_scale, sizes[t.in_index] * t.in_scale
            i, a = _cell(t.out_grid, f_out)
            j, b = _cell(t.in_grid, f_in)
            rows = torch.arange(len(self.layers), device=p.device)
            s00, s01 = t.seconds[rows, i, j], t.seconds[rows, i, j + 1]
            s10, s11 = t.seconds[rows, i + 1, j], t.seconds[rows, i + 1, j + 1]
            per_layer = s00 + a * (s10 - s00) + b * (s01 - s00) + a * b * (s11 - s10 - s01 + s00)
            seconds = seconds + (per_layer - t.seconds[:, 0, 0]).sum()
        return self.total - self.savings_scale * (self.total - seconds * self.calibration - self.floor)

    def _tensors(self, like: torch.Tensor) -> _Grids:
        key = (like.device, like.dtype)
        if key not in self._on:
            n_terms = len(self.widths_of.linear)
            g = len(FRACTIONS)

            def padded(sizes):  # an ungated dim has one size: the same cell G times
                return list(sizes) + [sizes[-1]] * (g - len(sizes))

            def grid(sizes):
                return [s / sizes[-1] for s in padded(sizes)]

            table = np.zeros((len(self.layers), g, g))
            for k, layer in enumerate(self.layers):
                seconds = np.asarray(layer.seconds)
                rows = seconds[[min(r, seconds.shape[0] - 1) for r in range(g)]]
                table[k] = rows[:, [min(c, seconds.shape[1] - 1) for c in range(g)]]
            as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=like.dtype,  # noqa: E731
                                             device=like.device)
            index = lambda a: torch.as_tensor(a, dtype=torch.long, device=like.device)  # noqa: E731
            scaling = np.concatenate([self.scaling.get(g, np.zeros(n)) for g, n in
                                      zip(self.widths_of.order, self.widths_of.sizes)])
            self._on[key] = _Grids(
                as_t(scaling), index([n_terms if t.out_term is None else t.out_term for t in self.layers]),
                index([n_terms if t.in_term is None else t.in_term for t in self.layers]),
                as_t([1.0 if t.out_term is None else 1 / t.out_sizes[-1] for t in self.layers]),
                as_t([1.0 if t.in_term is None else 1 / t.in_sizes[-1] for t in self.layers]),
                as_t([grid(t.out_sizes) for t in self.layers]), as_t([grid(t.in_sizes) for t in self.layers]),
                as_t(table))
        return self._on[key]


@dataclass(frozen=True)
class _Grids:
    scaling: torch.Tensor
    out_index: torch.Tensor
    in_index: torch.Tensor
    out_scale: torch.Tensor
    in_scale: torch.Tensor
    out_grid: torch.Tensor
    in_grid: torch.Tensor
    seconds: torch.Tensor


def _cell(grid: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, the grid cell holding fraction `f` (its lower index) and where in it `f`
    lies (0 to 1; clamped below the first fraction and above the last)."""
    g = grid.shape[1]
    i = (torch.searchsorted(grid, f.detach().unsqueeze(1)).squeeze(1).clamp(1, g - 1) - 1)
    lo = grid.gather(1, i.unsqueeze(1)).squeeze(1)
    hi = grid.gather(1, (i + 1).unsqueeze(1)).squeeze(1)
    return i, ((f - lo) / (hi - lo).clamp(min=1e-12)).clamp(0.0, 1.0)


def measure(gm: fx.GraphModule, plan: Plan, example_inputs: tuple, batch: int | None) -> LatencyModel:
    """The :class:`LatencyModel` of the traced dense model `gm` (before its gates) on the
    device of its parameters, at `batch` (None: the example inputs' own)."""
    inputs, factor = inputs_at(example_inputs, batch)
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in gm.parameters() if p.is_floating_point()), torch.float32)
    store = _Store(_cache_path())
    canonical = plan.canonical_names()
    layers = {}
    for node in gm.graph.nodes:
        layer = _layer(gm, plan, canonical, node, factor, device, dtype, store)
        if layer is not None:
            layers[node.name] = layer
    store.save()
    was_training = gm.training
    gm.eval()  # a train-mode BatchNorm would update its statistics
    try:
        with torch.no_grad():
            dense = _seconds(lambda: gm(*inputs), device)
            timer = _NodeTimer(gm, device)
            profile = timer.profile(inputs)
            one = _one_sample(example_inputs, inputs)
            floor = _seconds(lambda: gm(*one), device) if one is not None else 0.0
            floors = timer.profile(one) if one is not None else {}
    finally:
        gm.train(was_training)
    scaling, fixed = _scaling(plan, profile, floors, set(layers))
    return LatencyModel(plan.cost, list(layers.values()), scaling, fixed, floor, dense,
                        inputs[0].shape[0] if inputs else 1)


def warn_if_out_of_reach(model: LatencyModel, target: float) -> None:
    """Warn when even every gate closed keeps more than `target` of the dense latency: the
    budget's controller would close every gate it can and the cut still miss."""
    least = float(model.joined(torch.zeros(sum(model.widths_of.sizes), dtype=torch.float64))) / model.total
    if least > target:
        warnings.warn(f"Config(target_latency={target}): at batch {model.batch}, {least:.0%} of the dense model's "
                      "latency is the ops' dispatch and ops no gate narrows, which no cut removes: the cut keeps at "
                      "least that, and the budget would close every gate it can. A larger latency_batch leaves "
                      "more to cut.", stacklevel=4)


def _one_sample(example_inputs: tuple, inputs: tuple) -> tuple | None:
    """The inputs cut to a batch of one, where the model's time is its ops' dispatch; None
    when they are one already or their dim 0 is not a batch."""
    if not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].dim() == 0 or inputs[0].shape[0] == 1:
        return None
    try:
        return inputs_at(example_inputs, 1)[0]
    except InputError:
        return None


def _scaling(plan: Plan, profile: dict[str, float], floors: dict[str, float],
             layers: set[str]) -> tuple[dict[int, np.ndarray], float]:
    """Each node's time beyond its time on one sample (`floors`; the dispatch, which does
    not shrink with the channels): spread over the units of the prunable group its output's
    channels belong to (per unit, the seconds its channels make up), or fixed for a node
    whose output no gate narrows. The timed layers are left to their tables."""
    scaling: dict[int, np.ndarray] = {}
    fixed = 0.0
    for name, seconds in profile.items():
        if name in layers:
            continue
        seconds = max(0.0, seconds - floors.get(name, 0.0))
        space = plan.space_of(name)
        group = plan.groups[space.group] if space is not None and space.group >= 0 else None
        if group is None or not group.prunable or space.units is None:
            fixed += seconds
            continue
        per_unit = scaling.setdefault(group.id, np.zeros(group.n_units))
        np.add.at(per_unit, space.units, seconds / space.size)
    return scaling, fixed


class _NodeTimer(fx.Interpreter):
    """Median seconds of every node of a graph over a few runs."""

    def __init__(self, gm: fx.GraphModule, device: torch.device, runs: int = 7) -> None:
        super().__init__(gm)
        self.sync = _synchronizer(device)
        self.runs = runs
        self.times: dict[str, list[float]] = {}

    def profile(self, inputs: tuple) -> dict[str, float]:
        self.run(*inputs)  # warm
        self.times.clear()
        for _ in range(self.runs):
            self.run(*inputs)
        return {name: statistics.median(t) for name, t in self.times.items()}

    def run_node(self, n: fx.Node):
        if n.op in ("placeholder", "output", "get_attr"):
            return super().run_node(n)
        start = time.perf_counter()
        out = super().run_node(n)
        self.sync()
        self.times.setdefault(n.name, []).append(time.perf_counter() - start)
        return out


def inputs_at(example_inputs: tuple, batch: int | None) -> tuple[tuple, float]:
    """The example inputs repeated along dim 0 to `batch`, and the factor by which that
    scales a layer input's dim 0."""
    tensors = [x for x in example_inputs if isinstance(x, torch.Tensor) and x.dim() > 0]
    if batch is None or not tensors:
        return example_inputs, 1.0
    sizes = {x.shape[0] for x in tensors}
    if len(sizes) != 1:
        raise InputError(f"Config(latency_batch={batch}) repeats the example inputs along dim 0, but their dim 0 "
                         f"sizes differ ({sorted(sizes)}): their first dim is not one batch (a graph's nodes and "
                         "edges?). Set latency_batch=None to measure at the example inputs as they are.")
    (example_batch,) = sizes

    def repeat(x):
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            return x
        return x.repeat(math.ceil(batch / example_batch), *[1] * (x.dim() - 1))[:batch]

    return tuple(repeat(x) for x in example_inputs), batch / example_batch


def _layer(gm, plan: Plan, canonical: dict[str, str], node: fx.Node, factor: float, device, dtype,
           store: _Store) -> LayerTable | None:
    """The table of one layer call a gate narrows, or None for any other node."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    module = gm.get_submodule(node.target)
    rule = REGISTRY.module_rule(module)
    folded = rule.folded(module) if rule is not None and rule.channels_at is not None else None
    weight = getattr(module, "weight", None)
    name = canonical.get(f"{node.target}.weight")
    dims = plan.cost.dims_of.get(name, {}) if folded is not None else {}
    if not (set(dims) & {0, 1}) or weight is None or weight.dim() < 2:
        return None
    function, rest = folded
    shape = list(shape_of(node.args[0]))
    shape[0] = max(1, round(shape[0] * factor))
    channel_dim = normalize_dim(rule.channels_at, len(shape))
    out_full, in_full = weight.shape[0], weight.shape[1]
    out_sizes = _sizes(out_full, plan.config.round_to) if 0 in dims else (out_full,)
    in_sizes = _sizes(in_full, plan.config.round_to) if 1 in dims else (in_full,)
    key = json.dumps([_device_name(device), str(dtype), type(module).__name__, shape, list(weight.shape),
                      module.bias is not None, repr(rest), out_sizes, in_sizes])
    seconds = store.get(key)
    if seconds is None:
        seconds = [[_time_layer(function, rest, shape, channel_dim, weight, module.bias is not None, o, i, device,
                                dtype) for i in in_sizes] for o in out_sizes]
        store.put(key, seconds)
    seconds = np.maximum.accumulate(np.maximum.accumulate(np.asarray(seconds), axis=0), axis=1)
    return LayerTable(node.name, out_sizes, in_sizes, tuple(map(tuple, seconds.tolist())),
                      dims.get(0), dims.get(1))


def _sizes(full: int, multiple: int) -> tuple[int, ...]:
    """The widths a layer dim is timed at: :data:`FRACTIONS` of it, as multiples of
    ``Config.round_to``; without rounding one below the round numbers, where a cut width
    lands (a width of 127 runs slower than 128 does, and slower than the line from 64 to
    128 says)."""
    if multiple > 1:
        sizes = {min(full, max(multiple, round(f * full / multiple) * multiple)) for f in FRACTIONS}
    else:
        sizes = {max(1, round(f * full) - 1) if f < 1 else full for f in FRACTIONS}
    return tuple(sorted(sizes))


def _time_layer(function, rest, shape, channel_dim, weight, bias: bool, out_size, in_size, device, dtype) -> float:
    shape = list(shape)
    shape[channel_dim] = in_size
    x = torch.randn(shape, device=device, dtype=dtype)
    w = torch.randn(out_size, in_size, *weight.shape[2:], device=device, dtype=dtype)
    b = torch.randn(out_size, device=device, dtype=dtype) if bias else None
    with torch.no_grad():
        return _seconds(lambda: function(x, w, b, *rest), device)


def _synchronizer(device: torch.device):
    """What makes the clock wait for `device`'s queued work: nothing on a CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _seconds(call, device) -> float:
    """Median seconds of `call`, repeated for about :data:`_POINT_SECONDS` (3 to 50 times)."""
    sync = _synchronizer(device)
    call()
    sync()
    start = time.perf_counter()
    call()
    sync()
    first = time.perf_counter() - start
    times = []
    for _ in range(min(50, max(3, int(_POINT_SECONDS / max(first, 1e-6))))):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{platform.machine()}:{platform.processor()}:{torch.get_num_threads()} threads"


def _cache_path() -> Path:
    if os.environ.get("LUMOS_FX_LATENCY_CACHE"):
        return Path(os.environ["LUMOS_FX_LATENCY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lumos_fx" / "latency.json"


class _Store:
    """The JSON file of measured tables; read once, written back when something was added."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.added = False
        try:
            self.tables = json.loads(path.read_text())
        except (OSError, ValueError):
            self.tables = {}

    def get(self, key: str):
        return self.tables.get(key)

    def put(self, key: str, seconds) -> None:
        self.tables[key] = seconds
        self.added = True

    def save(self) -> None:
        if not self.added:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(self.tables))
            os.replace(partial, self.path)
        except OSError:
            pass  # a read-only home: measured again next time


def timed_ratio(cut, whole, inputs: tuple, repeats: int = 30) -> float:
    """Median seconds of `cut` over `whole`'s, the two taking turns."""
    sync = _synchronizer(next((p.device for p in whole.parameters()), torch.device("cpu")))
    times: dict[str, list[float]] = {"cut": [], "whole": []}
    with torch.no_grad():
        for model in (cut, whole):
            model(*inputs)
        for _ in range(repeats):
            for name, model in (("cut", cut), ("whole", whole)):
                sync()
                start = time.perf_counter()
                model(*inputs)
                sync()
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["cut"]) / statistics.median(times["whole"])
