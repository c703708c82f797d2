"""Lorenz-96: an LSTM forecasting the chaotic state 0.15 time units past a window of 8 (R^2)."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..workload import Scale, Task, Workload, image_task, mse_loss
from . import data


class LSTMForecaster(nn.Module):
    """``LSTM (batch_first) -> its last step's hidden state -> Linear``: windows
    (batch, steps, features) to the state ahead (batch, outputs)."""

    def __init__(self, features: int, outputs: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def task(scale: Scale, seed: int) -> Task:
    return replace(image_task(*data.load(scale.samples, seed), scale.batch, data.FEATURES), info={"sequence": True})


SCALES = {
    "smoke": Scale(samples=256, steps=20, batch=32, width=0.25),
    "cpu": Scale(samples=20_000, steps=1500, batch=128),
    "gpu": Scale(samples=100_000, steps=10_000, batch=512, width=2.0),
}

WORKLOAD = Workload(
    "lorenz96", "LSTM", "R^2", task,
    lambda task, scale: LSTMForecaster(len(data.FEATURES), data.K, hidden=max(8, round(64 * scale.width))),
    mse_loss, SCALES, lr=3e-3, target=0.4,
    informative=tuple(data.STATE), uninformative=tuple(data.UNINFORMATIVE))
