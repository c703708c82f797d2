"""The synthetic workload for the benchmark (see models_zoo.surrogates)."""

from ..surrogates import workload

WORKLOAD = workload("synthetic", target=0.04)
