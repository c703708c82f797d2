"""Results a model caches between calls, forgotten before it is traced.

A module that computes something from its input's shape once and keeps it (neuraloperator's
grid embedding: ``if self._grid is None or self._res != spatial_dims: self._grid = ...``)
holds, after any earlier call at the example's size, a cache hit. Traced in that state, the
graph would take the cached tensors as constants and guard the size they were made for:
the model is then refused at every other size it accepts. Traced with the cache empty, the
graph computes what the model would compute on a miss, at any size.

An attribute counts as a cache when a call of a copy of the model with it emptied (None; an
empty dict for a dict) runs, fills it again, and gives the same output as the model. Only
Python attributes holding tensors or sizes are tried: others (a layer's ``in_channels``)
are configuration.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .inputs import fresh
from .side_effects import MODULE_INTERNALS, Observation, preserved, rng_devices
from .verify import output_error, within_tolerance

Cache = tuple[str, str]  # (module qualname, attribute)


def _holds_tensors(value) -> bool:
    if isinstance(value, (torch.Tensor, torch.Size)):
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value)


def _empty(value):
    return {} if isinstance(value, dict) else None


def _candidates(model: nn.Module) -> list[Cache]:
    return [(qualname, name) for qualname, module in model.named_modules()
            for name, value in vars(module).items()
            if name not in MODULE_INTERNALS and _holds_tensors(value)]


def find(model: nn.Module, inputs: tuple, observed: Observation) -> list[Cache]:
    """The cache attributes of `model`: emptied one at a time on a copy, each must be filled
    again by an eval-mode call on the example `inputs` whose output equals `observed`'s."""
    if observed.error is not None:
        return []
    candidates = _candidates(model)
    if not candidates:
        return []
    probe = copy.deepcopy(model).eval()
    found = []
    with torch.no_grad(), torch.random.fork_rng(rng_devices(model)):
        for qualname, name in candidates:
            module = probe.get_submodule(qualname)
            with preserved(probe):
                setattr(module, name, _empty(getattr(module, name)))
                torch.manual_seed(0)
                try:
                    output = probe(*fresh(inputs))
                except Exception:
                    continue  # configuration the forward needs, not a cache
                refilled = _holds_tensors(getattr(module, name, None))
                if refilled and within_tolerance(*output_error(observed.output, output)):
                    found.append((qualname, name))
    return found


def forget(model: nn.Module, caches: list[Cache]) -> None:
    """Empty the `caches` of `model` (a copy about to be traced)."""
    for qualname, name in caches:
        module = model.get_submodule(qualname)
        setattr(module, name, _empty(getattr(module, name)))
