# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create / reuse .venv with the exact versions of requirements-lock.txt (rebuilt when the lock or
# pyproject.toml changes). `make lock` regenerates the lock from pyproject.toml's ranges; `make test-latest` runs
# the fast suite against the newest releases in a separate venv (a drift alarm, not part of CI).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.timm-nas-installed
LOCK := requirements-lock.txt
EXTRAS := test,plots,study,deploy,dev

.PHONY: demo test contract test-all test-latest lock bench wheel-check clean clean-venv

$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(LOCK) pip
	$(PY) -m pip install -c $(LOCK) -e '.[$(EXTRAS)]'
	$(PY) tools/lockfile.py check $(PY) $(LOCK)
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

# The fast suite on the newest releases the registry offers (no lock, no local version caps).
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT=/dev/null .venv-latest/bin/python -m pip install --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]'
	.venv-latest/bin/python -m pip list --format=freeze | grep -iE '^(torch|torchvision|timm|huggingface.hub|fvcore|onnx.*)=='
	.venv-latest/bin/python -m pytest

# Regenerate the lock from pyproject.toml's ranges in a scratch venv (then review the diff and commit it).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install -e '.[$(EXTRAS)]'
	.venv-lock/bin/python tools/lockfile.py write .venv-lock/bin/python $(LOCK)
	rm -rf .venv-lock

bench: $(STAMP)
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

# Build the wheel and import the shipped data from it (not from the checkout).
wheel-check: $(STAMP)
	rm -rf dist && $(PY) -m build --wheel --outdir dist . > /dev/null
	bash .ci/wheel_check.sh $(PY) dist

clean:
	rm -rf dist build demo_out .pytest_cache

clean-venv:
	rm -rf $(VENV) .venv-latest .venv-lock
