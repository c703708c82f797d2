# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
# The CPU wheel of torch 2.13.0 lies on the build machines' disk; a bare `torch`
# would pull a CUDA build of several GB. Override with e.g. `make TORCH=torch==2.5.1`.
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m models_zoo.cfd --out out/cfd

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .cache .pytest_cache .hypothesis
