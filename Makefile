# Two commands do everything on a fresh machine:
#   make demo   set up .venv/, then run the app on the embedded demo
#   make test   set up .venv/, then run the full test suite
# `make setup` alone builds .venv/ (idempotent: re-runs only when the requirements change).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean browser

setup: $(STAMP) browser

# Debian's Chromium for the real-browser tests of the app, driven by Playwright through
# executable_path (installed when missing and apt is usable as root, as on CI; elsewhere
# those tests are skipped and say why). Playwright's own browser download is never used.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed: the browser tests will be skipped"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip "setuptools>=69" wheel
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, torchvision, open_clip, diffusers, gradio, faiss; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/clipsae demo

bench: setup
	$(PY) -m pip install -q -r benchmarks/requirements-bench.txt -c benchmarks/constraints.txt
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
