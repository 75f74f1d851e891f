# Every target installs what it needs into .venv; nothing is installed by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
CORE_STAMP := $(VENV)/.core-stamp
RUST_SOURCES := $(shell find crates -name '*.rs' -o -name Cargo.toml) Cargo.toml Cargo.lock

.PHONY: run test test-rust test-py lint bench build clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet "maturin==1.16.0" "aiohttp==3.14.5" "uvloop==0.23.0" "orjson==3.13.0" \
	  "surrealdb==2.0.0" "cloudpickle==3.1.3" "cbor2==6.3.0" "typer==0.29.2" "rich==15.0.0" "nvidia-ml-py==13.615.71" \
	  "pytest==9.2.0" "pytest-timeout==2.4.0" "ruff==0.17.6" "fastapi==0.163.2" "a2wsgi==1.10.10"
	touch $(STAMP)

# maturin develop builds apothic._core (release mode) and installs the package editable.
$(CORE_STAMP): $(STAMP) $(RUST_SOURCES) pyproject.toml
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --quiet
	touch $(CORE_STAMP)

build: $(CORE_STAMP)

run: build
	$(BIN)/apothic server start
	$(BIN)/apothic run examples/hello.py

test-rust:
	cargo test --workspace --quiet

test-py: build
	$(BIN)/python -m pytest -q tests

test: test-rust test-py

lint: build
	$(BIN)/ruff check python tests bench
	cargo clippy --workspace --all-targets -- -D warnings

# Ray is the comparison point; if it cannot be installed, run_bench.py records it as unavailable.
bench: build
	$(BIN)/pip install --quiet "pytest-benchmark==5.3.1" "uvicorn==0.54.0" "httptools==0.7.1" "numpy==2.4.6"
	$(BIN)/pip install --quiet "ray==2.60.0" || echo "ray 2.60.0 could not be installed; benchmarking Apothic alone"
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/coordination_bench.py
	$(BIN)/python bench/capacity_bench.py
	$(BIN)/python bench/web_bench.py
	cargo run --release -p apothic-session --example mux_bench

clean:
	rm -rf $(VENV) target
