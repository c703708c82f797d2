"""One command and seed, the same numbers: torch's deterministic kernels for the benchmark.

Every draw of the zoo is seeded (data, initial weights, batch order, gate noise), so on a CPU
a run repeats itself bit for bit at the same thread count and torch build: a CPU kernel's
reduction order depends on the number of threads it splits the work into, and on the vector
instructions of the machine, not on chance. On a GPU, some kernels add with atomics in the
order threads finish (``scatter_add_``, ``index_add_``: every PyG message passing), and
cuBLAS picks its workspace per stream. :func:`make_deterministic` asks torch for its
deterministic kernel wherever it has one (a warning names an op that has none) and cuBLAS for
a fixed workspace.
"""

from __future__ import annotations

import os

import torch


def make_deterministic() -> None:
    # Read when cuBLAS starts: before the first CUDA matmul of the process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
