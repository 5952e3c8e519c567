# Two commands on a fresh machine:  `make demo` (set up, then train E88 on the embedded default
# corpus for one minute on the CPU) and `make test` (set up, then lint and run the test suite).
# What `make install` (and so `make demo` and `make test`) installs, and nothing else: a virtual
# environment .venv (python3 -m venv), the latest pip, $(TORCH) (torch 2.13.0 from PyPI unless
# TORCH=... says otherwise), then archdsl in editable mode with its `dev` extra: lark, numpy,
# triton (Linux only), schedulefree, rich, safetensors, ruff 0.17.6; pytest, pytest-xdist, hypothesis,
# optuna, cmaes, psycopg, scipy, matplotlib, tensorboard, wandb (pyproject.toml). No GPU baseline
# (mamba-ssm, fla): README.md's "GPU set-up" installs those. `make test` also installs PostgreSQL
# (as root, with apt).
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; on a GPU machine install the CUDA build of torch first (any >= 2.4).
TORCH ?= torch==2.13.0

.PHONY: install demo test lint postgres
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/archdsl train e88 --preset demo --depth 4 --batch 16 --seq 64 --lr 3e-3 --eval-bytes 32K --minutes 1 --device cpu --out runs/demo --force

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The distributed search test runs a private PostgreSQL server from Debian's packages: as root, install
# them if they are missing (otherwise that one test skips and says why).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
	  || echo "warning: could not install postgresql; the distributed search test will be skipped"

test: lint postgres
	$(PY) -m pytest -n 2 --dist loadgroup
