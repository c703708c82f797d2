"""The MLP surrogates (CFD, Fluid, Synthetic): a deliberately over-sized MLP, as a scientist would start."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SurrogateMLP(nn.Module):
    """``standardise -> (Linear, SiLU) x depth -> Linear -> unstandardise``.

    The standardisation lives in the model (as buffers), so the model, and the pruned model
    exported from it, take and return physical quantities.
    """

    def __init__(self, x_mean: np.ndarray, x_std: np.ndarray, y_mean: np.ndarray, y_std: np.ndarray,
                 hidden: int = 256, depth: int = 4) -> None:
        super().__init__()
        for name, value in (("x_mean", x_mean), ("x_std", x_std), ("y_mean", y_mean), ("y_std", y_std)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))
        layers, width = [], len(x_mean)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, len(y_mean))

    def forward(self, x):
        h = (x - self.x_mean) / self.x_std
        return self.head(self.body(h)) * self.y_std + self.y_mean
