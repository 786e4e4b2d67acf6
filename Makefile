# Two commands on a fresh machine (see README):
#   make quickstart   installs optsim in .venv and runs examples/quickstart.yaml (writes a figure)
#   make test         installs optsim with its test extras in .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch; set TORCH_PIP_ARGS to point pip at another build/index if needed.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: install quickstart test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/optsim run examples/quickstart.yaml

test: install
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n auto --maxprocesses 4

bench: install
	$(VENV)/bin/python bench/bench_round.py

clean:
	rm -rf results optsim-results .pytest_cache
