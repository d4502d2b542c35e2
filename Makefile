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

.PHONY: install repro test test-fast lint format clean data-check promote

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

# What the data-gates workflow runs after a data update: rebuild what the change affects through
# every data gate (raw table, cleaned labels, VQA set); a bad file or a gate violation fails it.
# Then the metrics against main (or HEAD). The GX data docs are in reports/validate_raw/data_docs.
data-check:
	dvc repro validate_vqa
	dvc metrics diff $$(git rev-parse -q --verify main >/dev/null && echo main || echo HEAD) --all

# After `dvc repro` on main: the challenger replaces the champion only if it wins on val
# (params: promote); PROMOTE_FLAGS=--dry-run decides without moving anything (pull requests).
promote:
	wafersage promote $(PROMOTE_FLAGS)

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
