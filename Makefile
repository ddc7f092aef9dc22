# Build, test and run the book. Every target that needs Python depends on the virtual
# environment, which is created on first use and refreshed when pyproject.toml or
# constraints.txt change.
#
#   make book      build the website into _build/html (committed outputs, nothing executed)
#   make test      unit tests, notebooks at the smoke budget (nbval), then the book build
#   make execute   re-run every notebook in place at the book budget, timing each one
#   make lint      ruff check and format check over *.py and notebooks
#   make clean     remove build outputs and caches (make distclean also removes .venv)
#   make book-student  build the book without solutions into _build/student/_build/html
#   make test-browser  open every page of _build/html in headless Chromium, network off (needs /usr/bin/chromium)
#   make pdf       build the whole book as one PDF, _build/latex/cif-vi-book.pdf (installs TeX Live when missing)
#   make mathjax   re-vendor the local MathJax copy in book/_static/mathjax from npm (pinned version)

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

.PHONY: help venv book test test-unit test-notebooks execute lint format clean distclean \
	book-student test-browser pdf pdf-deps mathjax

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
	$(MAKE) --no-print-directory book-student
	$(MAKE) --no-print-directory test-browser

# pytest exits with 5 when it collects no test; that is not a failure here.
# The browser test needs the built book, so `make test` runs it after the build (test-browser).
test-unit: venv
	$(RUN) python -m pytest tests -p no:cacheprovider --ignore=tests/test_browser.py \
		--ignore=tests/test_browser_player.py || [ $$? -eq 5 ]

# The student edition: the same pages without solutions. It is the default configuration plus
# book/student.yml (student_build: true, handled by book/_ext/book_extras.py), merged into
# _build/student.yml; output in $(STUDENT_OUT)/_build/html.
STUDENT_OUT ?= _build/student
STUDENT_CONFIG := $(STUDENT_OUT).yml
book-student: venv
	@mkdir -p $(dir $(STUDENT_CONFIG))
	$(RUN) python -c 'import sys, yaml; \
		merge = lambda a, b: {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v for k, v in b.items()}}; \
		base, extra = (yaml.safe_load(open(f)) for f in ("_config.yml", "book/student.yml")); \
		conf = merge(base, extra); ext = conf["sphinx"].get("local_extensions") or {}; \
		conf["sphinx"]["local_extensions"] = {k: "$(CURDIR)/" + v for k, v in ext.items()}; \
		yaml.safe_dump(conf, open("$(STUDENT_CONFIG)", "w"), sort_keys=False)'
	$(RUN) jupyter-book build . --all --config $(STUDENT_CONFIG) --path-output $(STUDENT_OUT) \
		$(BOOK_FLAGS)
	@echo "Open $(abspath $(STUDENT_OUT))/_build/html/index.html"

# Headless Chromium over every page of the built book(s), with all non-localhost requests
# blocked; screenshots go to _build/screenshots. BOOK_HTML and STUDENT_HTML may point elsewhere.
# tests/test_browser_player.py also plays the animations of chapters 2 and 3.
test-browser: venv
	$(RUN) python -m pytest -p no:cacheprovider tests/test_browser.py tests/test_browser_player.py

# The whole book as one PDF with pdflatex. The TeX packages come from the Debian registry and
# are installed on first use (about 420 MB on disk; see README); set PDF_DEPS= to skip that.
PDF_DEPS ?= pdf-deps
# (Jupyter Book's LaTeX runs xelatex for Unicode text, with the FreeFont fonts.)
TEX_PACKAGES := texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
	texlive-xetex fonts-freefont-otf tex-gyre latexmk lmodern poppler-utils
pdf-deps:
	@if command -v xelatex >/dev/null && command -v latexmk >/dev/null \
		&& kpsewhich tgtermes.sty >/dev/null && command -v pdftoppm >/dev/null; then \
		echo "TeX Live found."; \
	else \
		echo "Installing TeX Live from the Debian registry (a few minutes)."; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
			$(TEX_PACKAGES); \
	fi

pdf: venv $(PDF_DEPS)
	@start=$$(date +%s); \
	$(RUN) jupyter-book build . --all --builder pdflatex; \
	pdf=_build/latex/cif-vi-book.pdf; \
	echo "$$pdf: $$(pdfinfo $$pdf | sed -n 's/^Pages: *//p') pages, $$(du -h $$pdf | cut -f1), built in $$(( $$(date +%s) - start )) s"

# MathJax is served from the book itself (book/_static/mathjax) so that formulas render
# offline. Only the files the pages need are committed (about 2 MB); this target re-creates
# them from the npm registry's `mathjax` package at the pinned version and checksum.
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX_DIR := book/_static/mathjax
mathjax:
	rm -rf _build/mathjax && mkdir -p _build/mathjax
	cd _build/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null \
		&& echo "$(MATHJAX_SHA256)  mathjax-$(MATHJAX_VERSION).tgz" | sha256sum -c - \
		&& tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf $(MATHJAX_DIR) && mkdir -p $(MATHJAX_DIR)/output/chtml/fonts $(MATHJAX_DIR)/input/tex
	cp _build/mathjax/package/LICENSE _build/mathjax/package/es5/tex-mml-chtml.js $(MATHJAX_DIR)/
	cp -r _build/mathjax/package/es5/output/chtml/fonts/woff-v2 $(MATHJAX_DIR)/output/chtml/fonts/
	cp -r _build/mathjax/package/es5/input/tex/extensions $(MATHJAX_DIR)/input/tex/
	rm $(MATHJAX_DIR)/input/tex/extensions/all-packages.js
	printf '%s\n' "MathJax $(MATHJAX_VERSION) (Apache-2.0, see LICENSE), from the npm package" \
		"mathjax@$(MATHJAX_VERSION) (sha256 $(MATHJAX_SHA256)): es5/tex-mml-chtml.js," \
		"es5/output/chtml/fonts/woff-v2 and es5/input/tex/extensions. Re-create with make mathjax." \
		> $(MATHJAX_DIR)/PROVENANCE.txt
	@du -sh $(MATHJAX_DIR)

test-notebooks: venv
ifeq ($(strip $(NOTEBOOKS)),)
	@echo "No notebooks in notebooks/ yet: skipping the notebook tests."
else
	CIFUTILS_BUDGET=smoke CIFUTILS_PROGRESS=0 $(RUN) python -m pytest -p no:cacheprovider \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=$(NBVAL_CELL_TIMEOUT) \
		$(NOTEBOOKS) || [ $$? -eq 5 ]
endif

# One clean top-to-bottom run of each notebook. At the book budget the outputs are written back
# in place (the book renders them); at any other budget into _build/executed/<budget>/, so the
# committed outputs stay those of the book budget. Each notebook's time, machine and the files it
# read ($$CIFUTILS_READ_LOG) are added to results/execution.json, from which the book's build
# renders the run card at the top of each chapter (cifutils/runcard.py). RECORD= (empty) skips that.
# Choose notebooks or a budget with e.g.  make execute NOTEBOOKS=notebooks/05_gaussian_mixture.ipynb BUDGET=smoke
RECORD ?= results/execution.json
EXECUTED := _build/executed/$(BUDGET)
execute: venv
ifeq ($(strip $(NOTEBOOKS)),)
	@echo "No notebooks in notebooks/ yet: nothing to execute."
else
	@case "$(BUDGET)" in smoke|book|paper) ;; \
		*) echo "BUDGET must be smoke, book or paper, not '$(BUDGET)'" >&2; exit 2;; esac; \
	if [ "$(BUDGET)" = book ]; then where="--inplace"; \
	else mkdir -p $(EXECUTED); where="--output-dir=$(EXECUTED)"; fi; \
	reads=$$(mktemp); trap 'rm -f "$$reads"' EXIT; \
	commit=$$($(RUN) python -c 'from cifutils.results import git_commit; print(git_commit())'); \
	total_start=$$(date +%s); \
	for nb in $(NOTEBOOKS); do \
		start=$$(date +%s); : > "$$reads"; \
		echo "==> $$nb (CIFUTILS_BUDGET=$(BUDGET))"; \
		CIFUTILS_BUDGET=$(BUDGET) CIFUTILS_PROGRESS=0 CIFUTILS_READ_LOG="$$reads" \
			$(RUN) jupyter nbconvert --to notebook --execute $$where \
			--ExecutePreprocessor.timeout=$(EXECUTE_TIMEOUT) \
			--ExecutePreprocessor.kernel_name=python3 "$$nb"; \
		seconds=$$(( $$(date +%s) - start )); \
		echo "    $$nb took $$seconds s"; \
		if [ -n "$(RECORD)" ]; then $(RUN) python -m cifutils.runcard record "$$nb" \
			--budget $(BUDGET) --seconds $$seconds --read-log "$$reads" --record $(RECORD) \
			--commit "$$commit"; fi; \
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
