"""Side-by-side measurements: latency as medians of interleaved runs, peak inference memory,
GPU time and energy."""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


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


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages that ops allocate, each freed when the last tensor
    viewing it is collected; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, list[int]] = {}  # storage pointer -> [bytes, live tensors]
        self.now = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.refs[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.refs:
                    self.refs[key] = [storage.nbytes(), 0]
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                self.refs[key][1] += 1
                weakref.finalize(t, self._release, key)
        return out


def peak_inference_bytes(model: torch.nn.Module, inputs: tuple) -> int:
    """Peak memory of one forward pass on the CPU: the model's parameters and buffers plus the
    most bytes of intermediate tensors alive at once. (On a GPU,
    ``torch.cuda.max_memory_allocated`` measures the same.)"""
    static = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    tracker = _LiveBytes()
    with torch.inference_mode(), tracker:
        out = model(*inputs)
    del out
    return static + tracker.peak


def cuda_latency(models: dict[str, Callable], inputs: tuple, repeats: int, warmup: int = 10) -> dict[str, float]:
    """Median seconds per call on the GPU, timed with CUDA events, models interleaved."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(*inputs)
        for _ in range(repeats):
            for name, model in models.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(*inputs)
                end.record()
                torch.cuda.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def gpu_energy_joules(model: Callable, inputs: tuple, repeats: int) -> float | None:
    """Joules per call from NVML's energy counter over `repeats` calls, or None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    with torch.inference_mode():
        torch.cuda.synchronize()
        start = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        for _ in range(repeats):
            model(*inputs)
        torch.cuda.synchronize()
        return (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start) / 1e3 / repeats
