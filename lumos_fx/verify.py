"""Compare the outputs of two models on the same inputs (the prune invariant)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils._pytree import tree_flatten

RTOL = 1e-4


@contextmanager
def eval_mode(module: torch.nn.Module):
    """Put `module` in eval mode and restore every submodule's own flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def on_device_of(module: torch.nn.Module, inputs: tuple) -> tuple:
    """`inputs` on `module`'s device, floating ones in its floating dtype (after ``.double()``)."""
    param = next((p for p in module.parameters() if p.is_floating_point()), None)
    if param is None:
        return inputs
    return tuple(
        x.to(param.device, param.dtype if x.is_floating_point() else x.dtype) if isinstance(x, torch.Tensor) else x
        for x in inputs
    )


def output_error(reference, candidate) -> tuple[float, float]:
    """``(max |candidate - reference|, max |reference|)`` over every tensor of the outputs."""
    ref_leaves, ref_spec = tree_flatten(reference)
    out_leaves, out_spec = tree_flatten(candidate)
    if ref_spec != out_spec:
        return float("inf"), 0.0
    err, scale = 0.0, 0.0
    for r, o in zip(ref_leaves, out_leaves):
        if not isinstance(r, torch.Tensor):
            if r != o:
                return float("inf"), scale
            continue
        if r.shape != o.shape:
            return float("inf"), scale
        if r.numel():
            err = max(err, (o.double() - r.double()).abs().max().item())
            scale = max(scale, r.double().abs().max().item())
    return err, scale


def within_tolerance(err: float, scale: float) -> bool:
    """max abs error <= 1e-4 x output scale (plus a float32 floor for all-zero outputs)."""
    return err <= RTOL * scale + 1e-6
