"""Compare the outputs of two models on the same inputs (the prune invariant)."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.utils._pytree import tree_flatten, tree_map

from .inputs import fresh
from .side_effects import preserved, rng_devices

RTOL = 1e-4


@contextmanager
def in_mode(module: torch.nn.Module, training: bool):
    """Put `module` in train or eval mode and restore every submodule's own flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def eval_mode(module: torch.nn.Module):
    return in_mode(module, False)


def run_quietly(module: torch.nn.Module, inputs: tuple, stateful=()):
    """``module(*inputs)`` in eval mode without gradients, on copies of `inputs`, with the
    module's buffers (and the `stateful` parameters it has) put back afterwards."""
    with torch.no_grad(), eval_mode(module), _state_kept(module, stateful):
        return module(*fresh(inputs))


def run_in_train_mode(module: torch.nn.Module, inputs: tuple, seed: int, stateful=(), still=()):
    """``module(*inputs)`` in train mode without gradients under `seed`, on copies of
    `inputs`, with the submodules `still` in eval mode; state put back as by :func:`run_quietly`."""
    with torch.no_grad(), in_mode(module, True), _state_kept(module, stateful), \
            torch.random.fork_rng(rng_devices(module)):
        for submodule in still:
            submodule.eval()
        torch.manual_seed(seed)
        return module(*fresh(inputs))


def _state_kept(module: torch.nn.Module, stateful):
    """:func:`preserved` for `module`'s buffers and those of the `stateful` parameters it has."""
    params = {name for name, _ in module.named_parameters()}
    return preserved(module, [p for p in stateful if p in params])


def on_device_of(module: torch.nn.Module, inputs: tuple) -> tuple:
    """`inputs` on `module`'s device, floating ones in its floating dtype (after ``.double()``)."""
    param = next((p for p in module.parameters() if p.is_floating_point()), None)
    if param is None:
        return inputs
    return tree_map(
        lambda x: x.to(param.device, param.dtype if x.is_floating_point() else x.dtype)
        if isinstance(x, torch.Tensor) else x,
        inputs,
    )


def _leaf_error(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """Largest difference at the finite entries of `reference`, and their largest magnitude;
    the difference is inf unless `candidate` has the same NaN and inf entries (a NaN never
    hides a difference)."""
    r, o = (torch.view_as_real(t) if t.is_complex() else t for t in (reference, candidate))
    r, o = r.double(), o.double()
    finite = torch.isfinite(r)
    if reference.is_complex():
        scale = reference.abs().double().max().item()
    else:
        scale = r[finite].abs().max().item() if finite.any() else 0.0
    if not torch.equal(finite, torch.isfinite(o)):
        return float("inf"), scale
    rn, on = r[~finite], o[~finite]
    if not bool(((rn == on) | (rn.isnan() & on.isnan())).all()):
        return float("inf"), scale
    return ((o[finite] - r[finite]).abs().max().item() if finite.any() else 0.0), scale


def _mutable(tree):
    """`tree` with fx's immutable containers (an Interpreter's outputs) and dict-dataclass
    output containers (transformers' ModelOutput) as plain dicts and lists."""
    if isinstance(tree, immutable_dict) or (isinstance(tree, dict) and dataclasses.is_dataclass(tree)):
        return {k: _mutable(v) for k, v in tree.items()}
    if isinstance(tree, immutable_list):
        return [_mutable(v) for v in tree]
    if type(tree) is tuple:
        return tuple(_mutable(v) for v in tree)
    return tree


def output_error(reference, candidate) -> tuple[float, float]:
    """``(max |candidate - reference|, max |reference|)`` over every tensor of the outputs;
    the error is inf where the structures, shapes, or NaN and inf entries differ."""
    ref_leaves, ref_spec = tree_flatten(_mutable(reference))
    out_leaves, out_spec = tree_flatten(_mutable(candidate))
    if ref_spec != out_spec:
        return float("inf"), 0.0
    err, scale = 0.0, 0.0
    for r, o in zip(ref_leaves, out_leaves):
        if not isinstance(r, torch.Tensor):
            if not isinstance(o, type(r)) or (r != o and not (r != r and o != o)):  # NaN equals NaN here
                return float("inf"), scale
            continue
        if not isinstance(o, torch.Tensor) or r.shape != o.shape:
            return float("inf"), scale
        if r.numel():
            leaf_err, leaf_scale = _leaf_error(r, o)
            err, scale = max(err, leaf_err), max(scale, leaf_scale)
    return err, scale


def within_tolerance(err: float, scale: float) -> bool:
    """max abs error <= 1e-4 x output scale (plus a float32 floor for all-zero outputs)."""
    return err <= RTOL * scale + 1e-6
