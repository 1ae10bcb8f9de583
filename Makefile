# Two commands do all the set-up: `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv and installs the project (CPU torch pinned by constraints-cpu.txt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= arith-tiny

.PHONY: demo verdict test test-all lint bench clean

$(BIN)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e '.[dev,trl]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/halluc run --preset $(PRESET)

# the full verdict protocol: five seeds (the unit of every interval), the decoding sweep, the
# accuracy-against-tokens curves and the controls (RESULTS.md: its time)
verdict: $(BIN)/.installed
	$(BIN)/halluc run --preset $(PRESET) --set 'run.seeds=[0,1,2,3,4]' --set run.out_dir=runs/$(PRESET)-verdict

lint: $(BIN)/.installed
	$(BIN)/ruff check search pipeline workers tests benchmarks experiments
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -m "not slow and not gpu"

test-all: lint
	$(BIN)/pytest -q -m ""

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/search_bench.py
	$(BIN)/python benchmarks/model_search_bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
