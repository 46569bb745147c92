# memjax: two commands on a fresh machine (Python 3.11 + pip):  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export JAX_PLATFORMS ?= cpu
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export PYTHONUNBUFFERED := 1
export MPLBACKEND ?= Agg
PYTEST_WORKERS ?= 2

.PHONY: venv demo test lint format test-slow notebooks bench docs dist clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

## Main job on the embedded default config: writes figures + results.json under runs/.
demo: $(STAMP)
	$(PY) -m experiments.laplace.two_point_1d --config=experiments/laplace/configs/two_point_1d.py

## Default (non-slow) test suite: lint, the strict documentation build, unit/property tests, every
## experiment's :smoke config end to end, and every notebook executed with nbmake (SMALL = True).
test: $(STAMP) lint docs
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" --durations=15 tests --nbmake notebooks

## Lint (ruff check) and formatting check (ruff format --check); part of `make test`.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Apply the formatter and the safe lint fixes.
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Documentation site (Sphinx + MyST-NB) in docs/_build/html; any warning fails the build.
## -E: a fresh environment every time, so a warning is never hidden by an incremental build.
## Notebooks are rendered with their stored outputs, not executed.
docs: $(STAMP)
	$(PY) -m sphinx -b html -E -W --keep-going -n -q docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

## Source distribution and wheel in dist/ (what the notebooks' Colab install cell can install).
## --no-isolation builds with the venv's setuptools, so no network is needed.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --no-isolation --sdist --wheel --outdir dist .
	@ls dist

notebooks: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --nbmake notebooks

test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m slow tests

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache runs *.egg-info docs/_build docs/api/generated dist build
