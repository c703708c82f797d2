"""Side-by-side measurements: latency as medians of interleaved runs."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def interleaved_latency(models: dict[str, Callable], inputs: tuple, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each model, the models taking turns on every repeat so that
    drift in the machine's load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(*inputs)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(*inputs)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
