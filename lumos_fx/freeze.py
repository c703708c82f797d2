"""Frozen modules for fine-tuning a pretrained model (the paper's scenario S2)."""

from __future__ import annotations

from torch import fx, nn

from .config import module_matches
from .errors import InputError


def freeze(wrapped: fx.GraphModule, model: nn.Module, specs) -> list[str]:
    """Stop gradients to the weights of the modules `specs` name in `model`, and of
    everything inside them, in `wrapped`. Returns the frozen parameter names.

    Modules are matched on the user's model (qualified names, classes or a predicate
    ``f(module, name)``, as for ``leaf_modules``), then their weights are found in `wrapped`
    by name prefix, so layers lumos_fx wrote out (``attn.q_proj`` for an
    ``nn.MultiheadAttention`` ``attn``) stay frozen with their module. The gates are never
    frozen: they train, and prune() cuts the frozen layers too.
    """
    specs = tuple(specs)
    if not specs:
        return []
    prefixes = {name for name, module in model.named_modules()
                if name and any(module_matches(s, module, name) for s in specs)}
    unmatched = [s for s in specs if isinstance(s, str) and s not in prefixes]
    if unmatched:
        raise InputError(f"Config.frozen names modules the model does not have: {unmatched}; its top-level "
                         f"modules are {[n for n, _ in model.named_children()]}")
    frozen = []
    for name, param in wrapped.named_parameters():
        parts = name.split(".")
        if any(".".join(parts[:i]) in prefixes for i in range(1, len(parts))):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
