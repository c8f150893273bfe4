# Every target here runs in CI (.ci/run), so none of them can rot unnoticed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,postgres
# The example project's default database, so that `cd example_project && python manage.py
# backfill status` after `make demo` sees the demo's runs (and `make clean` removes it).
DEMO_DB := $(CURDIR)/example_project/db.sqlite3
DEMO_ROWS ?= 200000
PYTEST_ARGS ?=
comma := ,
INSTALLED := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

BENCH_ARGS ?=

.PHONY: demo test test-postgres test-mysql lint bench replicas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall when the project's metadata or the requested extras change.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: $(INSTALLED)
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	cd example_project && export DATABASE_URL=sqlite:///$(DEMO_DB) && \
	  ../$(BIN)/python manage.py migrate --no-input -v 0 && \
	  ../$(BIN)/python manage.py seed_posts --count $(DEMO_ROWS) && \
	  ../$(BIN)/python manage.py backfill run blog.populate_post_slugs && \
	  ../$(BIN)/python manage.py backfill status && \
	  DJANGO_SUPERUSER_PASSWORD=admin ../$(BIN)/python manage.py createsuperuser \
	    --no-input --username admin --email admin@example.com
	@echo
	@echo "The admin shows these runs (and starts, pauses and resumes them):"
	@echo "  cd example_project && ../$(BIN)/python manage.py runserver --insecure"
	@echo "  then open http://127.0.0.1:8000/admin/backfills/ and log in as admin / admin"
	@echo "  (a run started there is drained by ../$(BIN)/python manage.py db_worker,"
	@echo "  or by ../$(BIN)/python manage.py backfill worker)"

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=.:example_project $(BIN)/mypy

test: lint
	DATABASE_URL= $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: $(INSTALLED)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/test $(BIN)/python -m pytest $(PYTEST_ARGS)

test-mysql:
	$(MAKE) EXTRAS=test,mysql _test-mysql

_test-mysql: $(INSTALLED)
	DATABASE_URL=mysql://root@127.0.0.1:3306/test $(BIN)/python -m pytest $(PYTEST_ARGS)

# A PostgreSQL primary (5440) with a streaming replica (5441) and a MariaDB primary (3340) with
# a replica (3341), for tests/test_replica_lag.py (see .ci/run for how it is run against them);
# `scripts/replicas.sh stop` stops them.
replicas:
	scripts/replicas.sh start

# Benchmarks: the database is DATABASE_URL's (SQLite by default); see bench/run.py.
# BENCH_ARGS="--parallel ..." measures parallel runs instead (bench/parallel.py; PostgreSQL or
# MariaDB/MySQL, and on SQLite it says so and skips).
bench: $(INSTALLED)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info $(DEMO_DB)* bench.sqlite3* bench-results*.json bench-online*.json
