# The two commands (README): `make demo` and `make test`. Both set up .venv from the lock first.
VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: setup demo test lint lock

setup:
	@scripts/setup-venv

## The whole job on the embedded local stack (tansu + SeaweedFS on 127.0.0.1).
demo: setup
	$(BIN)/moderation-worker demo $(DEMO_ARGS)

## Every test (pass PYTEST_ARGS="-k something" to narrow it).
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Regenerate requirements/*.txt from pyproject.toml (UPGRADE=1 to move every pin).
lock:
	@scripts/lock
