# Elephant: `make run` starts the whole system, `make test` runs every test.
# The venv's interpreter: Debian's python3.11 where the machine has it with venv (built with
# profile-guided optimisation into a static executable: the fleet simulator runs 14% faster on it than
# on a shared-library build such as pyenv's, with the same results), else python3.11, else python3.
PYTHON ?= $(shell for p in /usr/bin/python3.11 python3.11 python3; do \
	$$p -c 'import ensurepip, venv' >/dev/null 2>&1 && command -v $$p && break; done)
VENV := .venv
PY := $(VENV)/bin/python

# Tests use the local PostgreSQL when it answers (CI starts it), SQLite otherwise, and
# Redis database 1 so a test run never flushes the data of a running `make run`.
PG_URL := postgres://postgres@127.0.0.1:5432/elephant
TEST_DATABASE_URL ?= $(shell pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && echo $(PG_URL))
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1

.PHONY: run test install lint bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m devtools.stack

test: $(VENV)/.installed
	sh devtools/chromium.sh
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" REDIS_URL="$${REDIS_URL:-$(TEST_REDIS_URL)}" \
		$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) bench/relay.py

clean:
	rm -rf $(VENV) db.sqlite3 .pytest_cache
