# Two commands on a fresh machine: `make repro` (the whole pipeline on the embedded default, CPU,
# no downloads) and `make test`. Both create .venv and install the pinned CPU stack first.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install repro test test-fast lint format clean

$(BIN)/.installed: pyproject.toml constraints-cpu.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-cpu.txt -e ".[dev]"
	touch $@

install: $(BIN)/.installed

repro: install
	dvc repro

test: install
	pytest

test-fast: install
	pytest -m "not slow"

lint: install
	ruff check .
	ruff format --check .

format: install
	ruff check --fix .
	ruff format .

clean:
	rm -rf data/raw data/clean data/rubrics data/vqa models/* reports/* mlflow.db mlartifacts
