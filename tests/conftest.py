import os
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

# `make test` runs the suite in one xdist worker per core: one intra-op thread each (and in the
# processes a test starts), since two workers of two threads on two cores run slower than one.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# LUMOS_EXAMPLES scales every property test (e.g. LUMOS_EXAMPLES=2000 for a long run).
settings.register_profile(
    "lumos",
    max_examples=int(os.environ.get("LUMOS_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("LUMOS_RANDOM") is None,
)
settings.load_profile("lumos")
