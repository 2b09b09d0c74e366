# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs gencraft, runs `gencraft quickstart`
#   make test   creates .venv, installs gencraft with dev extras, runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch lies on these machines; installing it first keeps pip
# from pulling a multi-GB CUDA build when it resolves the project.
TORCH := torch==2.13.0

.PHONY: demo test lint bench install install-dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/gencraft quickstart

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/train_shakespeare.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
