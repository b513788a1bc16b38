# Two entry points: `make study` (set up, then run the main job) and `make test` (set up, then the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
# Test processes (pytest-xdist); each test module runs whole in one of them, so module fixtures run once.
TEST_WORKERS ?= 2

.PHONY: setup study test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	touch $@

study: setup
	$(VENV)/bin/scaling-study $(ARGS)

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)
