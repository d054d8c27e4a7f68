# harvester images (docs/scrapyd.md, "Containers").
#   docker build -t harvester .                                  crawler, Scrapyd, scheduler, API
#   docker build --target scrapydweb -t harvester-scrapydweb .   ScrapydWeb in its own venv
# Both run as the unprivileged user `harvester`; state lives in /var/lib/harvester.

# --- ScrapydWeb: pins Flask 2.0 / SQLAlchemy 1.3, so it never shares the crawler's venv ---
FROM python:3.11-slim-bookworm AS scrapydweb
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONWARNINGS="ignore:pkg_resources is deprecated:UserWarning" \
    HARVEST_HOME=/var/lib/harvester
RUN useradd --create-home --uid 10001 harvester \
    && mkdir -p /var/lib/harvester && chown harvester:harvester /var/lib/harvester
COPY deploy/scrapydweb/requirements.txt /app/deploy/scrapydweb/requirements.txt
RUN python -m venv /opt/scrapydweb \
    && /opt/scrapydweb/bin/pip install -r /app/deploy/scrapydweb/requirements.txt
COPY deploy/scrapydweb/scrapydweb_settings_v11.py /app/deploy/scrapydweb/
ENV PATH=/opt/scrapydweb/bin:$PATH
USER harvester
# ScrapydWeb reads its settings file from the working directory.
WORKDIR /app/deploy/scrapydweb
EXPOSE 5000
# Inside a container the UI must listen on the container's interface; publish it on the
# host's 127.0.0.1 only (deploy/docker-compose.yml does).
CMD ["scrapydweb", "--bind", "0.0.0.0"]

# --- harvester: the crawler, Scrapyd, the scheduler and the API (default image) ---
FROM python:3.11-slim-bookworm AS harvester
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HARVEST_HOME=/var/lib/harvester \
    HARVEST_SOURCES=/app/sources.toml
# Debian's Chromium drives rendered sources (Playwright cannot download browsers here).
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 harvester \
    && mkdir -p /var/lib/harvester && chown harvester:harvester /var/lib/harvester
WORKDIR /app
COPY requirements.txt ./
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -r requirements.txt
ENV PATH=/opt/venv/bin:$PATH
# Only what the package and Scrapyd need: no local venvs, state or build output.
COPY pyproject.toml setup.py scrapy.cfg README.md sources.toml ./
COPY harvester/ harvester/
COPY deploy/ deploy/
# Installed in place (like `make install`): scrapy.cfg, setup.py and deploy/ stay in /app,
# where `harvest scrapyd deploy` builds the egg and `harvest scrapyd start` finds its config.
# scrapyd-deploy writes build/ and *.egg-info there, so the app user owns /app.
RUN pip install --no-deps --no-build-isolation -e . && chown -R harvester:harvester /app
USER harvester
CMD ["harvest", "crawl", "--all"]
