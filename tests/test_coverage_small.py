"""A few models of the external coverage benchmark (benchmarks/coverage.py), in the suite.

torch_geometric is a dependency of lumos_fx, so these run everywhere; each model goes through
the benchmark's own check (instrument == original, 30% of every gate closed, prune, pruned ==
gated on the example and on another graph, parameters cut, export + load in a fresh process).
The full benchmark (`make coverage`) covers 100+ models from ten libraries.
"""

from __future__ import annotations

import functools
import os
import sys

import pytest

pytest.importorskip("torch_geometric")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import coverage  # noqa: E402
from benchmarks.coverage_models import by_key  # noqa: E402

MODELS = ["pyg/GCN", "pyg/GraphSAGE", "pyg/GIN", "pyg/GAT", "pyg/MLP", "pyg/PMLP"]


@functools.lru_cache(maxsize=None)
def record(key: str) -> dict:
    coverage.seed_everything(0)
    model, example, others = by_key()[key].build()
    coverage.seed_everything(0)
    return coverage.check_model(model, example, others, seed=0)


@pytest.mark.parametrize("key", MODELS)
def test_pruned_equals_gated(key):
    rec = record(key)
    assert rec["status"] in (coverage.EXPORTED, coverage.PRUNED), rec.get("traceback") or rec["reason"]
    assert rec["init_rel_err"] < coverage.INIT_TOL
    assert rec["closed"] > 0
    assert rec["params_after"] < rec["params_before"]
    checked = [c for c in rec["checks"] if "rel_err" in c]
    assert len(checked) == 2, rec["checks"]  # the example and another graph / batch size
    assert max(c["rel_err"] for c in checked) < coverage.PRUNE_TOL


@pytest.mark.parametrize("key", MODELS)
def test_export_loads_in_a_fresh_process(key):
    rec = record(key)
    assert rec["status"] == coverage.EXPORTED, rec["reason"]
    assert rec["export_rel_err"] < coverage.EXPORT_TOL


def test_a_failure_is_recorded_not_raised():
    import torch
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:  # control flow on a tensor value: fx cannot trace it
                return self.lin(x)
            return -self.lin(x)

    rec = coverage.check_model(Branchy(), (torch.ones(3, 4),))
    assert rec["status"] == coverage.FAILED
    assert rec["stage"] == "instrument"
    assert rec["error_type"] == "TraceError"
    assert "test_coverage_small.py" in rec["where"]
