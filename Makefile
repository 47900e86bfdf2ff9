# hataori: `make demo` and `make test` are all a fresh machine needs (they create .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HATAORI_DATA_DIR ?= $(abspath ../shared/data)
CORPUS ?= $(HATAORI_DATA_DIR)/gutenberg
INSTRUCTIONS ?= $(HATAORI_DATA_DIR)/instruction-data.json

.PHONY: all venv build demo test test-rust test-python bench lock clean

all: build

# Dependencies are installed once per change of pyproject.toml / constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Rebuild the Rust extension in place (incremental; a no-op when nothing changed).
build: $(STAMP)
	$(VENV)/bin/maturin develop --release --quiet

# The Prefect flow on the embedded server: corpus -> tokenizer -> shards -> pretrain -> finetune -> report.
# CORPUS (files or directories of *.txt) and INSTRUCTIONS (the instruction records) replace the
# config's download URLs; a rerun is all cached.
demo: build
	$(VENV)/bin/hataori run configs/demo.toml --set 'corpus.sources=[{url="$(CORPUS)", doc_split="blank_line"}]' \
		--set 'finetune.data="$(INSTRUCTIONS)"'

test: test-rust test-python

test-rust:
	cargo test --quiet

test-python: build
	$(VENV)/bin/pytest -q

bench: build
	$(PY) bench/run_all.py

# Refresh constraints.txt from the current .venv (after changing dependencies on purpose).
lock: $(STAMP)
	@{ sed -n '1,3p' constraints.txt; $(VENV)/bin/pip freeze --exclude-editable | grep -viE '^(hataori|-e )'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) target artifacts .pytest_cache .hypothesis
