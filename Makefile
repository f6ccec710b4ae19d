# Two commands for a new user (see README.md):
#   make run    install everything into .venv and start the web app on http://127.0.0.1:7860
#   make test   install everything into .venv (and Debian's redis-server, for the tests) and run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean redis-server

$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt -r requirements-dev.txt
	# these pin ancient torch releases (or a second OpenCV) in their metadata: their real needs are in requirements.txt
	$(BIN)/python -m pip install --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python app.py $(ARGS)

# the Redis-backed job tests start their own server on a free loopback port (tests/conftest.py) and stop it
redis-server:
	@.ci/apt-install redis-server redis-server || echo "redis-server not installed (no root or sudo -n): the Redis tests skip, and fail under CI=true"

test: install redis-server
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/python -m ruff check .

bench: install
	$(BIN)/python bench/extract.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
