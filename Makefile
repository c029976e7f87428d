# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create / reuse .venv and install what they need from the package registry.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.timm-nas-installed

.PHONY: demo test contract test-all bench wheel-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,plots,study]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m timm_nas demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest

# timm's own tests/test_models.py (fetched from timm's sdist with pip) on every timm-nas model.
contract: $(STAMP)
	$(PY) -m pytest -m contract -rP

test-all: $(STAMP)
	$(PY) -m pytest -m "not hub_online"

bench: $(STAMP)
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

# Build the wheel and import the shipped data from it (not from the checkout).
wheel-check: $(STAMP)
	$(PY) -m pip install --quiet build
	rm -rf dist && $(PY) -m build --wheel --outdir dist . > /dev/null
	bash .ci/wheel_check.sh $(PY) dist

clean:
	rm -rf dist build demo_out .pytest_cache
