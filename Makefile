# Two commands do everything: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/paper-digest run --once --config config/demo.toml --outbox outbox

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_parse.py
	$(BIN)/python bench/bench_quality.py
	$(BIN)/python bench/bench_matching.py

lint: $(STAMP)
	$(BIN)/python -m pip install -qq -e '.[test,dev]'
	$(BIN)/ruff check digest tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) outbox data/demo.db build dist *.egg-info
