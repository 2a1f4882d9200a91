# Two commands do everything: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-web test bench lint clean screenshots

# A key for the demo's rating links only: real configs name their own secret variable.
DEMO_KEY := DIGEST_DEMO_WEB_SECRET=$${DIGEST_DEMO_WEB_SECRET:-demo-only-key-never-use-it-for-a-real-digest}

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(DEMO_KEY) $(BIN)/paper-digest run --once --config config/demo.toml --outbox outbox

# Serves the demo digests' rating links on http://127.0.0.1:8080 (Ctrl-C stops it).
demo-web: $(STAMP)
	$(DEMO_KEY) $(BIN)/paper-digest web --config config/demo.toml

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_parse.py
	$(BIN)/python bench/bench_quality.py
	$(BIN)/python bench/bench_matching.py
	$(BIN)/python bench/bench_feedback.py
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_scale.py --watchlists 1000 --repeat 3

# The demo's email digests as headless Chromium shows them (800 and 400 px, light and
# dark), into screenshots/; needs Debian's chromium and chromium-driver.
screenshots: $(STAMP)
	$(BIN)/python -m pip install -qq -e '.[test]'
	$(BIN)/python tools/screenshots.py --out screenshots

lint: $(STAMP)
	$(BIN)/python -m pip install -qq -e '.[test,dev]'
	$(BIN)/ruff check digest tests bench tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) outbox build dist *.egg-info
	rm -f data/demo.db data/demo.db-wal data/demo.db-shm data/demo.db.journal data/demo.db.lock \
		data/backups/demo-*.db
