import os
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

# LUMOS_EXAMPLES scales every property test (e.g. LUMOS_EXAMPLES=2000 for a long run).
settings.register_profile(
    "lumos",
    max_examples=int(os.environ.get("LUMOS_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("LUMOS_RANDOM") is None,
)
settings.load_profile("lumos")
