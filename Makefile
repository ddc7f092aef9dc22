# Build, test and run the book. Every target that needs Python depends on the virtual
# environment, which is created on first use and refreshed when pyproject.toml or
# constraints.txt change.
#
#   make book      build the website into _build/html (committed outputs, nothing executed)
#   make test      unit tests, notebooks at the smoke budget (nbval), then the book build
#   make execute   re-run every notebook in place at the book budget, timing each one
#   make lint      ruff check and format check over *.py and notebooks
#   make clean     remove build outputs and caches (make distclean also removes .venv)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# Run tools with the venv first on PATH, so `python` and Jupyter kernels resolve inside it.
RUN := PATH="$(BIN):$$PATH"

NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb))
BUDGET ?= book
# Per-cell limit in seconds for `make test` (smoke budget) and per-notebook for `make execute`.
NBVAL_CELL_TIMEOUT ?= 900
EXECUTE_TIMEOUT ?= 14400
BOOK_FLAGS ?= -W -n --keep-going

.PHONY: help venv book test test-unit test-notebooks execute lint format clean distclean

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e '.[test,book,dev]'
	@touch $@

book: venv
	$(RUN) jupyter-book build . $(BOOK_FLAGS)
	@echo "Open $(CURDIR)/_build/html/index.html"

test: test-unit test-notebooks
	$(RUN) jupyter-book build . --all $(BOOK_FLAGS)

# pytest exits with 5 when it collects no test; that is not a failure here.
test-unit: venv
	$(RUN) python -m pytest tests -p no:cacheprovider || [ $$? -eq 5 ]

test-notebooks: venv
ifeq ($(strip $(NOTEBOOKS)),)
	@echo "No notebooks in notebooks/ yet: skipping the notebook tests."
else
	CIFUTILS_BUDGET=smoke CIFUTILS_PROGRESS=0 $(RUN) python -m pytest -p no:cacheprovider \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=$(NBVAL_CELL_TIMEOUT) \
		$(NOTEBOOKS) || [ $$? -eq 5 ]
endif

# One clean top-to-bottom run of each notebook, outputs written back in place.
# Choose notebooks or a budget with e.g.  make execute NOTEBOOKS=notebooks/05_mixture.ipynb BUDGET=smoke
execute: venv
ifeq ($(strip $(NOTEBOOKS)),)
	@echo "No notebooks in notebooks/ yet: nothing to execute."
else
	@total_start=$$(date +%s); \
	for nb in $(NOTEBOOKS); do \
		start=$$(date +%s); \
		echo "==> $$nb (CIFUTILS_BUDGET=$(BUDGET))"; \
		CIFUTILS_BUDGET=$(BUDGET) CIFUTILS_PROGRESS=0 $(RUN) jupyter nbconvert \
			--to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=$(EXECUTE_TIMEOUT) \
			--ExecutePreprocessor.kernel_name=python3 "$$nb"; \
		echo "    $$nb took $$(( $$(date +%s) - start )) s"; \
	done; \
	echo "All notebooks took $$(( $$(date +%s) - total_start )) s"
endif

lint: venv
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: venv
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

clean:
	rm -rf _build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .ipynb_checkpoints \) \
		-print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) *.egg-info
