# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs gencraft, runs `gencraft quickstart`
#   make test   creates .venv, installs gencraft with dev extras, runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch lies on these machines; installing it first keeps pip
# from pulling a multi-GB CUDA build when it resolves the project.
TORCH := torch==2.13.0

.PHONY: demo test lint bench install install-dev browser clean

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

# The web studio's browser test drives Debian's Chromium: install it when missing and we can
# (root with apt); otherwise that one test skips and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
	    >/dev/null 2>&1 || echo "chromium could not be installed: the browser test will be skipped"; \
	fi

test: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/train_shakespeare.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
