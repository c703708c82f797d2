"""The puremd workload for the benchmark (see models_zoo.surrogates).

The force depends on the two bond vectors through their lengths and the angle between them,
which an MLP learns only once it sees all six components at once: stochastic gates from
the first step make the second vector look like noise, and Lumos closed it (R^2 0.87 with
the angle term lost, at every lam tried from 0.01 to 1). Half the steps with the gates held
open, then lam 0.1, keeps every informative input (R^2 0.987).
"""

from ..surrogates import workload

WORKLOAD = workload("puremd", target=0.5, lam=0.1, warmup=0.5)
