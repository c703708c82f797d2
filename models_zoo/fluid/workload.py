"""The fluid workload for the benchmark (see models_zoo.surrogates)."""

from ..surrogates import workload

WORKLOAD = workload("fluid", target=0.1)
