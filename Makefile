# Two commands do everything on a fresh machine:
#   make demo   set up .venv/ with the runtime only, then run the app on the embedded demo
#   make test   set up .venv/ with the runtime + the [dev] and [interop] extras, then run the tests
# `make setup` (runtime) and `make setup-dev` (+ extras) build .venv/ alone; both are idempotent
# (they re-install only when requirements.txt, pyproject.toml or constraints.txt change).
# Every install applies constraints.txt: the versions the suite passed with.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PINS   := -c constraints.txt
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed

.PHONY: setup setup-dev test lint demo bench browser clean

setup: $(RUNTIME_STAMP)

setup-dev: $(DEV_STAMP)

$(RUNTIME_STAMP): requirements.txt pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade -q pip "setuptools>=69" wheel
	$(PIP) install -r requirements.txt $(PINS)
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, torchvision, open_clip, diffusers, gradio, faiss; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PIP) install --no-build-isolation -e ".[dev,interop]" $(PINS)
	touch $@

# Debian's Chromium for the app's real-browser tests (Playwright drives it through
# executable_path; Playwright's own browser download is never used). Explicit, never a
# side effect of setup or test: as root with apt (CI: .ci/run) it apt-installs chromium;
# elsewhere it only says what to do, and the browser tests skip with that reason.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && \
	  echo "chromium: installed with apt-get"; \
	else echo "chromium is not installed: install Debian's chromium (sudo apt-get install chromium, or make browser as root); until then the browser tests are skipped"; fi

# The suite runs on TEST_WORKERS processes (pytest-xdist), each test file on one of them so
# its module fixtures are built once; TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: setup-dev
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff's lint rules and formatter (pyproject.toml [tool.ruff]); CI runs it before the tests.
lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: setup
	$(VENV)/bin/clipsae demo

bench: setup-dev
	$(PIP) install -q -r benchmarks/requirements-bench.txt $(PINS)
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
