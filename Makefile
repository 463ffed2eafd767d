# Set-up and everyday commands. `make run` and `make test` are all a fresh clone needs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: the CPU wheel, not a multi-GB CUDA build.
	$(BIN)/pip install -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install  ## the main job on embedded defaults: import the sample data, train a bundle, serve it (dry run)
	$(BIN)/python -m training.quickstart
	$(BIN)/python -m bot demo

test: lint  ## the static checks, then the whole test suite (SQLite and a PostgreSQL server the tests start)
	scripts/ensure-postgres
	$(BIN)/python -m pytest

lint: install  ## ruff (lint and format) and mypy (the annotations, checked)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
