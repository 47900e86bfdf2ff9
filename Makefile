# hataori: `make demo` and `make test` are all a fresh machine needs (they create .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HATAORI_DATA_DIR ?= $(abspath ../shared/data)
CORPUS ?= $(HATAORI_DATA_DIR)/gutenberg
INSTRUCTIONS ?= $(HATAORI_DATA_DIR)/instruction-data.json

.PHONY: all venv build demo test test-rust test-python browser bench gpu-check gpu-wheels lock clean

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

# Two pytest-xdist workers, each running whole files (module fixtures are built once); the longest
# files start first (tests/conftest.py). PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
test-python: build browser
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# tests/test_api_browser.py drives Debian's chromium: installed here when missing and apt can (as root);
# otherwise that test skips with the reason (and fails under CI=true).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  echo "note: chromium is not installed; tests/test_api_browser.py will skip"

bench: build
	$(PY) bench/run_all.py

# The prepared GPU check (bench/gpu_check.py, about 8 minutes on one GPU): GPT-2 124M training
# tokens/s, MFU and memory (compiled), the loss step, bf16 generation and evaluation speed, the
# cuda-marked tests; one JSON and one markdown table. `make gpu-check ARGS=--dry-run` rehearses it
# on the CPU. On a bare GPU machine (PyTorch there, no .venv) see bench/README.md: PY=python3 and
# the wheels from `make gpu-wheels`.
gpu-check:
	$(PY) bench/gpu_check.py $(ARGS)

# What a bare GPU machine (Python 3.12, x86-64, PyTorch and transformers installed) lacks: pydantic
# and its dependencies at our pinned versions, as wheels in bench/results/wheels (ignored by git).
gpu-wheels: $(STAMP)
	grep -E '^(pydantic|pydantic_core|annotated-types|typing-inspection|typing_extensions)==' constraints.txt | \
	  xargs $(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d bench/results/wheels

# Refresh constraints.txt from the current .venv (after changing dependencies on purpose).
lock: $(STAMP)
	@{ sed -n '1,3p' constraints.txt; $(VENV)/bin/pip freeze --exclude-editable | grep -viE '^(hataori|-e )'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) target artifacts .pytest_cache .hypothesis
