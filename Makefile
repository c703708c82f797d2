# Two entry points: `make demo` and `make test`. Both create .venv on first use.
# `make bench` runs the CPU benchmark into results/ (with the optional DepGraph and OTO baselines),
# every workload at its budget with 3 seeds (means ± std; about 95 minutes on 2 cores), then the
# parameter and FLOP budgets, the training-step overhead,
# the round_to widths, the latency budget against a FLOP budget tuned to the same latency,
# every workload with a tolerance instead of a budget, and feature selection
# against LassoNet, STG and permutation importance;
# `make bench-smoke` runs every workload end to end at a tiny scale in under a minute.
PYTHON ?= python3
# The CPU wheel of torch 2.13.0 lies on the build machines' disk; a bare `torch`
# would pull a CUDA build of several GB. Override with e.g. `make TORCH=torch==2.5.1`.
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo cpp-demo test bench bench-smoke deploy coverage clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m models_zoo.cfd --out out/cfd

# `make cpp-demo` builds examples/cpp's driver against the libtorch inside the torch wheel and runs
# the demo's AOTInductor package from C++ on the demo's test faces (run `make demo` first).
CPP_BUILD ?= build/cpp

cpp-demo: $(STAMP)
	@test -f out/cfd/model/model_aoti.pt2 || (echo "out/cfd/model/model_aoti.pt2 is missing: run make demo first"; exit 1)
	cmake -S examples/cpp -B $(CPP_BUILD) $(if $(shell command -v ninja),-G Ninja) -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CPP_BUILD)
	$(CPP_BUILD)/flux --repeat 1000 out/cfd/model/model_aoti.pt2 out/cfd/faces.bin out/cfd/fluxes.bin
	$(PY) -c "from models_zoo.tensor_file import read_tensor as r; \
		d = (r('out/cfd/fluxes.bin') - r('out/cfd/fluxes_python.bin')).abs().max().item(); \
		print(f'fluxes from C++ vs Python: max |diff| {d:.2e}'); assert d < 1e-4"

# One pytest-xdist worker per core of the CI machine; a file's tests stay in one worker, so a
# module's fixtures (the C++ driver's build, a trained zoo model) are made once.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[baselines,oto,featsel]"
	$(PY) -m models_zoo.bench --scale cpu --seeds 0 1 2 --finetune 0.3 --out results
	$(PY) -m models_zoo.bench.budget --out results
	$(PY) -m models_zoo.bench.budget --kind flops --workloads dms stemdl --targets 0.5 0.2 --out results
	$(PY) -m models_zoo.bench.overhead --out results
	$(PY) -m models_zoo.bench.round_to --out results
	$(PY) -m models_zoo.bench.latency_budget --out results
	$(PY) -m models_zoo.bench.tolerance --out results
	$(PY) -m models_zoo.bench.feature_selection --out results

# Latency of dense and pruned CFD and DMS models in every runtime (eager, torch.compile,
# AOTInductor from Python and from C++, onnxruntime) at batch 1, 64 and 4096.
deploy: $(STAMP)
	$(PY) -m benchmarks.deploy --out results

bench-smoke: $(STAMP)
	$(PY) -m models_zoo.bench --scale smoke --out out/bench-smoke

# `make coverage` runs the external coverage benchmark (benchmarks/coverage.py: 100+ small models
# from torchvision, timm, PyG, MONAI, neuraloperator, PhysicsNeMo, DeepXDE, smp, e3nn and
# transformers) in its own venv: torchvision needs torch 2.14.1 (both wheels lie on the build
# machines' disk). Pass options with ARGS, e.g. `make coverage ARGS="--only timm"`.
COV_TORCH ?= torch==2.14.1 torchvision==0.29.1
COV_VENV ?= .venv-coverage
COV_STAMP := $(COV_VENV)/.installed

$(COV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(COV_VENV)
	$(COV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COV_VENV)/bin/python -m pip install --quiet $(COV_TORCH)
	$(COV_VENV)/bin/python -m pip install --quiet -e ".[coverage]"
	touch $(COV_STAMP)

coverage: $(COV_STAMP)
	$(COV_VENV)/bin/python -m benchmarks.coverage --out results $(ARGS)

clean:
	rm -rf $(VENV) out build .cache .pytest_cache .hypothesis
