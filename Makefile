# Semantic Image Synthesis, Rebuilt: developer entry points (GNU make).
#
#   make test   unit tests, then every notebook re-executed and compared (nbval)
#   make book   execute every notebook and build the offline HTML book
#   make browser  install Debian's chromium for the book's browser test (root, apt)
#   make check-book  open every page of the built book in headless Chromium, offline
#   make check-portable  nbval under older-CPU kernels (no SIMD, AVX2) at 1 and 2 threads
#   make lab    JupyterLab in the course environment
#   make judge  the labkit judge (python -m labkit.judge train)
#   make clean  remove build outputs and caches (keeps .venv and runs/)
#
# Every target that needs Python first creates/updates .venv from
# requirements.lock; that step is skipped while the lock and pyproject.toml
# are older than the stamp file .venv/.installed.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python 3.11 if it works here, else whatever python3 is (pip then refuses a
# wrong version, since pyproject.toml requires 3.11).
PYTHON_SYS := $(shell python3.11 -c 'pass' >/dev/null 2>&1 && echo python3.11 || echo python3)

# The venv's tools first on PATH, so kernels and subprocesses use it too.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# No debugger warning noise in cell outputs. Thread counts are left to
# labkit.setup. MPLBACKEND is set for the unit tests only: notebook kernels
# keep their inline backend, whose figure outputs nbval compares.
export PYDEVD_DISABLE_FILE_VALIDATION := 1

NOTEBOOKS := $(wildcard notebooks/*.ipynb)
PYTEST    := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: help .venv test book vendor browser check-book check-portable lab judge clean

# help: list the targets.
help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

# .venv: create the virtualenv and install the exact pins, then labkit itself
# (editable, without resolving dependencies again). Idempotent via $(STAMP).
.venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON_SYS)"; $(PYTHON_SYS) -m venv $(VENV); }
	$(BIN)/python -m pip install "$$(grep '^pip==' requirements.lock)" || echo "warning: could not install the pinned pip, continuing with $$($(BIN)/python -m pip --version)"
	$(BIN)/python -m pip install -r requirements.lock
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	@touch $@

# test: unit tests, then nbval re-executes each notebook in its default
# profile and compares outputs (tests/nbval_sanitize.cfg blanks run-dependent text).
# The unit tests include tests/test_book.py, which builds the book from the
# committed outputs (the ones nbval checks) and opens every page in headless
# Chromium (skipped without chromium: `make browser`).
test: $(STAMP)
	MPLBACKEND=Agg $(PYTEST) tests
ifeq ($(strip $(NOTEBOOKS)),)
	@echo "no notebooks under notebooks/ yet: nbval skipped"
else
	$(PYTEST) --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks
endif

# vendor: make sure the JS the book loads locally (RequireJS, ipywidgets
# embed-amd, MathJax) is present; fetches it with npm only if missing.
vendor:
	scripts/fetch_vendor_js.sh

# book: execute every notebook in its default profile (scripts/build_book.py,
# with labkit.execution's client, not Jupyter Book's) and build _build/html
# from those copies; any Sphinx warning fails the build. Then check that no
# page loads a script, stylesheet or font from another host.
book: $(STAMP) vendor
	$(BIN)/python scripts/build_book.py
	$(BIN)/python scripts/check_offline_html.py _build/html

# browser: Debian's chromium, which tests/test_book.py drives headless (the
# test is skipped without it). Installed only if missing; needs root and apt.
browser:
	@if command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium; then \
	    echo "chromium: $$(command -v chromium || echo /usr/bin/chromium)"; \
	else \
	    apt-get update && apt-get install -y --no-install-recommends chromium; \
	fi

# check-book: every page of _build/html in headless Chromium with the network
# off (figures, widgets, no remote request); screenshots in _build/screenshots.
# Run it after `make book`; `make test` runs the same check after building.
check-book: $(STAMP)
	$(BIN)/python scripts/browser_check.py --html _build/html --screenshots _build/screenshots

# check-portable: the notebooks' compared outputs hold on other CPUs and thread
# counts: nbval under ATEN_CPU_CAPABILITY=default and avx2 (with oneDNN, MKL and
# NumPy capped alike), each at 1 and 2 threads (LABKIT_THREADS). About 20 min.
check-portable: $(STAMP)
	scripts/check_notebooks_portable.sh

# lab: JupyterLab on the course environment (open the URL it prints).
lab: $(STAMP)
	$(BIN)/jupyter lab --allow-root --no-browser

# judge: run the labkit judge on the training task.
judge: $(STAMP)
	$(BIN)/python -m labkit.judge train

# clean: remove the built book and caches; .venv and runs/ are kept.
clean:
	rm -rf _build .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 rm -rf
