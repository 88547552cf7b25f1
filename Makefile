# Every target creates .venv on first use and reinstalls only when pyproject.toml changes.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,serving,dagster]'
	# The asset-graph screenshot test needs a headless browser (Debian's chromium).
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m demo.run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python bench/registry.py
	$(BIN)/python bench/serving_plane.py
	$(BIN)/python bench/predlog.py
	$(BIN)/python bench/plugin.py
	$(BIN)/python bench/rollback.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/decisions.py
	$(BIN)/python bench/report.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .modelops .pytest_cache
