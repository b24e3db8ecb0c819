# The two commands of the README: `make demo` and `make test`. Each installs what it needs when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench system venv clean

system:
	@bash scripts/ensure-system.sh

$(STAMP): pyproject.toml | system
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "edgetwin: installing Python packages into $(VENV)"
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev,demo]'
	@touch $(STAMP)

venv: system $(STAMP)

demo: venv
	$(BIN)/edgetwin demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

test: lint
	@# pytest exits 5 when it collects nothing: that is a failure here, as any non-zero exit is.
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
