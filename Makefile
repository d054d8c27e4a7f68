# Every target installs what it needs first: a fresh clone needs only Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HARVEST := $(VENV)/bin/harvest
STAMP := $(VENV)/.installed

.PHONY: run demo test bench lint install clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make run: crawl every enabled source in sources.toml into the embedded PostgreSQL
run: $(STAMP)
	$(HARVEST) crawl --all

## make demo: the same job against the bundled demo site served on 127.0.0.1 (offline)
demo: $(STAMP)
	$(HARVEST) demo

## make test: the whole suite (real PostgreSQL, real crawls on 127.0.0.1)
test: $(STAMP)
	$(PY) -m ruff check harvester tests bench
	$(PY) -m pytest

## make bench: throughput and memory figures (docs/benchmarks.md)
bench: $(STAMP)
	$(PY) bench/pipeline.py

lint: $(STAMP)
	$(PY) -m ruff check harvester tests bench

clean:
	rm -rf $(VENV) build *.egg-info
