# hataori: `make demo` and `make test` are all a fresh machine needs (they create .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HATAORI_DATA_DIR ?= $(abspath ../shared/data)
CORPUS ?= $(HATAORI_DATA_DIR)/gutenberg
DEMO ?= artifacts/demo

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

# Until the Prefect flow lands: corpus -> tokenizer -> dataset -> a short CPU pretraining -> a sample.
demo: build
	$(VENV)/bin/hataori tokenizer train $(CORPUS) --vocab-size 8000 --preset gpt2 --out $(DEMO)/tokenizer
	$(VENV)/bin/hataori tokenizer stats --tokenizer $(DEMO)/tokenizer $(HATAORI_DATA_DIR)/the-verdict.txt
	$(VENV)/bin/hataori data build $(CORPUS) --tokenizer $(DEMO)/tokenizer --out $(DEMO)/data --doc-split blank_line --shard-tokens 1000000
	$(VENV)/bin/hataori train --data $(DEMO)/data --out $(DEMO)/run --preset tiny --max-steps 300 --batch-size 16 \
		--set lr=0.003 --set warmup_steps=20 --set eval_interval=100 --set checkpoint_interval=100
	$(VENV)/bin/hataori generate --checkpoint $(DEMO)/run "It was a dark and stormy night" --max-new-tokens 40 --seed 1

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
