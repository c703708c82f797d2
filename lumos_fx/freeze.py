"""Frozen modules for fine-tuning a pretrained model (the paper's scenario S2)."""

from __future__ import annotations

from torch import fx, nn

from .config import check_module_names, module_matches


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
    check_module_names(specs, model, "frozen")
    prefixes = {name for name, module in model.named_modules()
                if name and any(module_matches(s, module, name) for s in specs)}
    frozen = []
    for name, param in wrapped.named_parameters():
        parts = name.split(".")
        if any(".".join(parts[:i]) in prefixes for i in range(1, len(parts))):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
