# The two set-up commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# PyTorch for consortia.learn: the CPU build, installed before the extras so that no
# requirement pulls a CUDA build (set TORCH to another pinned CPU wheel if this one is absent)
TORCH  ?= torch==2.13.0

.PHONY: setup demo example test lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,learn,omics]"
	touch $@

demo: setup            ## install, then run the end-to-end demo (hub + nodes on 127.0.0.1)
	$(VENV)/bin/consortia demo

example: setup         ## install, then a first federated analysis in simulation
	$(PY) examples/first_analysis.py

test: setup lint       ## install, lint, then run the whole test suite
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 -q

lint: setup            ## ruff (lint + format) and mypy (py.typed promises types)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix src tests bench examples
	$(VENV)/bin/ruff format src tests bench examples

bench: setup          ## every benchmark (each prints its figures; none is a test)
	$(PY) bench/secure_sum.py
	$(PY) bench/glm_overhead.py
	$(PY) bench/tcga_cox.py
	$(PY) bench/dp_km.py
	$(PY) bench/round_latency.py
	$(PY) bench/large_round.py
	$(PY) bench/attacks.py
	$(PY) bench/cli_startup.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
