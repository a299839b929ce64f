# Two commands do all the set-up on a fresh machine (Python 3.11 or 3.12, no Docker, no cloud):
#   make dev    install from the lock file, start the embedded stack fresh and seeded, serve the UI
#   make test   install from the lock file, then lint, type-check and run the whole test suite
# The test suite starts and stops its own embedded stack.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
UV := $(PYTHON) -m uv
STAMP := $(VENV)/.synced

.PHONY: dev test lint bench down install clean

$(STAMP): pyproject.toml uv.lock
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --compile-bytecode --extra local --extra test --extra bench
	@touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(VENV)/bin/lifecycle dev

lint: $(STAMP)
	$(VENV)/bin/ruff check lifecycle_pipelines tests bench
	$(VENV)/bin/mypy lifecycle_pipelines tests

test: lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	@set -e; for script in bench/*/run.py; do echo "== $$script"; $(VENV)/bin/python $$script; done

down: $(STAMP)
	$(VENV)/bin/lifecycle down

clean:
	rm -rf $(VENV) .lifecycle .pytest_cache .mypy_cache .ruff_cache
