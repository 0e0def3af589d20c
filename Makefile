# mtvae — two commands do everything on a fresh machine: `make book` and `make test`
# (`make pdf` builds the thesis PDF).
# Each target creates .venv and installs the pinned requirements on first use.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= full
DEVICE  ?= auto
ONLY    ?=

.PHONY: install book pdf test lint regenerate clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

## Build the HTML book from the committed, executed chapters (no code is run).
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --builder html -W --keep-going
	@echo "Open _build/html/index.html"

## Build the thesis PDF with LaTeX (XeLaTeX; Debian: texlive-xetex texlive-latex-extra latexmk
## texlive-fonts-recommended tex-gyre) from the same executed chapters: no code is run or shown.
pdf: $(STAMP)
	$(VENV)/bin/jupyter-book build . --builder pdflatex
	@echo "Thesis: _build/latex/thesis.pdf"

lint: $(STAMP)
	$(VENV)/bin/ruff check mtvae tests

## All tests: lint, unit tests, nbval smoke run of every chapter, book build, browser check.
test: lint
	MPLBACKEND=Agg $(PY) -m pytest

## Re-execute the chapters with papermill: make regenerate PROFILE=full DEVICE=cuda [ONLY="01"]
regenerate: $(STAMP)
	$(PY) -m mtvae regenerate --profile $(PROFILE) --device $(DEVICE) $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf _build .pytest_cache .ruff_cache
