"""Gate settings for checking the cut without training: a fixed fraction of each group closed."""

from __future__ import annotations

import torch

import lumos_fx


def close_fraction(wrapped, fraction: float, seed: int = 0) -> None:
    """Close ``round(fraction * n)`` randomly chosen units of every gate (leaving at least
    one open, so a one-channel input stays), open the rest."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            la = gate.log_alpha
            closed = torch.randperm(la.numel(), generator=gen)[: min(round(fraction * la.numel()), la.numel() - 1)]
            la.fill_(6.0)
            la[closed] = -6.0
