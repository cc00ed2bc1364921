# digits: `make run` starts the local stack, `make test` runs every test.
# Both install first into .venv with the exact pins in constraints.txt.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

# MNIST: the shared copy beside the project when there is one, else ./data/mnist.
DIGITS_DATA_DIR ?= $(if $(wildcard ../shared/data/mnist/t10k-labels-idx1-ubyte.gz),$(abspath ../shared/data/mnist),$(CURDIR)/data/mnist)
export DIGITS_DATA_DIR
# Real digits from other writers (training, calibration, evaluation), likewise.
DIGITS_REAL_DATA_DIR ?= $(if $(wildcard ../shared/data/real/optdigits.zip),$(abspath ../shared/data/real),$(CURDIR)/data/real)
export DIGITS_REAL_DATA_DIR

.PHONY: install run test test-fast lint format bench report train evaluate clean system-deps

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PIP) --config-settings editable_mode=compat -e '.[ml,local,dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the browser and compose tests use (chromium, docker-compose); root only.
system-deps:
	bash .ci/system-deps.sh

run: install
	$(VENV)/bin/digits up

test: install system-deps
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not browser"

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

train: install
	$(VENV)/bin/digits train

evaluate: install
	$(VENV)/bin/digits evaluate

report: install
	$(VENV)/bin/digits compare --out reports

bench: install
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
