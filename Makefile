# Every target installs what it needs first: a fresh clone needs only Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HARVEST := $(VENV)/bin/harvest
STAMP := $(VENV)/.installed
# Debian packages the tests use: Chromium drives the rendered sources and browser tests
# (Playwright cannot download browsers here); Prometheus/promtool check the alert rules.
CHROMIUM ?= /usr/bin/chromium
PROMTOOL ?= /usr/bin/promtool

.PHONY: run demo test bench bench-steps bench-copy bench-api bench-rendered chromium system-packages lint install clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make chromium: nothing if Chromium is there; installs it as root; otherwise says how
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "Chromium is missing at $(CHROMIUM): install it with \`sudo apt-get install -y chromium\`." >&2; \
		exit 1; \
	fi

## make system-packages: Chromium and Prometheus (promtool) from Debian, as for chromium
system-packages: chromium
	@if [ -x "$(PROMTOOL)" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus; \
	else \
		echo "Prometheus is missing at $(PROMTOOL): install it with \`sudo apt-get install -y prometheus\`." >&2; \
		exit 1; \
	fi

## make run: crawl every enabled source in sources.toml into the embedded PostgreSQL
run: $(STAMP)
	$(HARVEST) crawl --all

## make demo: the same job against the bundled demo site served on 127.0.0.1 (offline)
demo: $(STAMP)
	$(HARVEST) demo

## make test: the whole suite (real PostgreSQL, real crawls on 127.0.0.1), a test file per
## worker at a time (pytest-xdist; each worker has its own embedded PostgreSQL or scratch
## database); TEST_WORKERS=1 runs it in one process
TEST_WORKERS ?= 2
test: $(STAMP) system-packages
	$(PY) -m ruff check harvester tests bench
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

## make bench: throughput and memory figures (docs/benchmarks.md)
bench: $(STAMP)
	$(PY) bench/pipeline.py
	$(PY) bench/simhash.py
	$(PY) bench/clusters.py

## make bench-steps: what each item pipeline costs an item inside a crawl (docs/benchmarks.md)
bench-steps: $(STAMP)
	$(PY) bench/steps.py

## make bench-copy: PostgreSQL's CPU a row of the store's COPY, by index set (docs/benchmarks.md)
bench-copy: $(STAMP)
	$(PY) bench/copy_costs.py

## make bench-api: /signals latency and throughput with 1M signals (docs/api.md)
bench-api: $(STAMP)
	$(PY) bench/api.py

## make bench-rendered: peak memory over 500 pages rendered in Chromium (docs/kinds/rendered.md)
bench-rendered: $(STAMP) chromium
	$(PY) bench/rendered.py

lint: $(STAMP)
	$(PY) -m ruff check harvester tests bench

clean:
	rm -rf $(VENV) $(UI_VENV) build *.egg-info

# ScrapydWeb: its own venv (it pins Flask 2.0 / SQLAlchemy 1.3 / w3lib 2.0), settings in
# deploy/scrapydweb/, data under $HARVEST_HOME/scrapydweb (docs/scrapyd.md).
UI_VENV ?= .venv-ui
UI_STAMP := $(UI_VENV)/.installed
UI_HOME = $(abspath $(or $(HARVEST_HOME),var))

.PHONY: ui ui-install

$(UI_STAMP): deploy/scrapydweb/requirements.txt
	test -x $(UI_VENV)/bin/python || $(PYTHON) -m venv $(UI_VENV)
	$(UI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r deploy/scrapydweb/requirements.txt
	touch $(UI_STAMP)

## make ui-install: only build ScrapydWeb's venv ($(UI_VENV))
ui-install: $(UI_STAMP)

## make ui: ScrapydWeb in the foreground on 127.0.0.1:$SCRAPYDWEB_PORT (default 5000); needs
## SCRAPYDWEB_USERNAME/SCRAPYDWEB_PASSWORD and the Scrapyd account SCRAPYD_USERNAME/SCRAPYD_PASSWORD
ui: $(UI_STAMP)
	cd deploy/scrapydweb && HARVEST_HOME="$(UI_HOME)" PYTHONDONTWRITEBYTECODE=1 \
		PYTHONWARNINGS="ignore:pkg_resources is deprecated:UserWarning" \
		exec "$(abspath $(UI_VENV))/bin/scrapydweb"
