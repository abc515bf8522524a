# The two set-up commands of the README, and a few conveniences.
#   make demo   - install, then run every asset end to end on the embedded local default
#   make test   - install (incl. the BigQuery emulator side environment and Chromium for the
#                 UI end-to-end test), then the whole suite
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.analytics_data/dagster_home

.PHONY: install demo test dev validate bench stop clean

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The local instance file dagster.yaml (plain Dagster configuration): SQLite storage under
# DAGSTER_HOME (no service needed), the same run queue, limits and retries as the
# production instance dagster.prod.yaml.
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m analytics_platform.demo

test: install
	bash .ci/setup_bigquery_emulator.sh
	bash .ci/setup_e2e.sh
	$(VENV)/bin/pytest analytics_platform_tests -q

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml

validate: install
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

bench: install
	$(PY) -m benchmarks list

# The demo leaves the embedded PostgreSQL running (reused by the next run and by `make dev`).
stop: install
	$(PY) -m analytics_platform.demo --stop

clean: stop
	rm -rf .analytics_data
