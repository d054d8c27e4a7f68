"""ScrapydWeb 1.6 settings for harvester; ScrapydWeb reads this file from its working directory.

Nothing secret lives here: every value that differs between machines comes from the
environment, and ScrapydWeb refuses to start when the UI credentials are missing.

``SCRAPYDWEB_USERNAME``, ``SCRAPYDWEB_PASSWORD``  basic auth of the web UI (required)
``SCRAPYDWEB_PORT``        port of the web UI, default 5000; the address is 127.0.0.1
                           (``scrapydweb --bind ADDRESS`` overrides it, e.g. in a container)
``HARVEST_SCRAPYD_URLS``   Scrapyd nodes, comma-separated, default the local one,
                           ``http://127.0.0.1:$SCRAPYD_HTTP_PORT`` (6800); a URL without a
                           port means port 80, as in a browser
``SCRAPYD_USERNAME``, ``SCRAPYD_PASSWORD``  their account, unless a URL carries
                           ``user:password@`` itself (the variables Scrapyd reads)
``HARVEST_HOME``           ScrapydWeb keeps its data in ``$HARVEST_HOME/scrapydweb``; a local
                           Scrapyd's logs are read from ``$HARVEST_HOME/scrapyd/logs`` (where
                           ``harvest scrapyd start`` keeps them). Default: the project's ``var``.

ScrapydWeb executes this file twice (``import`` in ``scrapydweb.vars``, then
``app.config.from_pyfile``): it must stay cheap and idempotent. Only UPPER-CASE names become
settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

_PROJECT = Path(__file__).resolve().parents[2]
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _home() -> Path:
    home = Path(os.environ.get("HARVEST_HOME") or "var")
    return home if home.is_absolute() else _PROJECT / home


def _ui_credentials() -> tuple[str, str]:
    username = os.environ.get("SCRAPYDWEB_USERNAME", "")
    password = os.environ.get("SCRAPYDWEB_PASSWORD", "")
    if not username or not password:
        raise SystemExit("ScrapydWeb refuses to start without a login: set SCRAPYDWEB_USERNAME "
                         "and SCRAPYDWEB_PASSWORD.")
    return username, password


def _port() -> int:
    value = os.environ.get("SCRAPYDWEB_PORT", "5000")
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"SCRAPYDWEB_PORT must be a TCP port number, not {value!r}.")
    return int(value)


def _node(url: str) -> tuple[str, str, str, str, str]:
    """One Scrapyd URL as ScrapydWeb's (username, password, host, port, group) tuple; the tuple
    form survives ``:``, ``@`` and ``#`` in passwords, the string form does not."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port or 80  # the URL's own meaning, as harvest reads it
    except ValueError:  # "http://127.0.0.1:abc"
        port = None
    if parts.scheme != "http" or not parts.hostname or parts.path.strip("/") or port is None:
        shown = parts.hostname or "***@" + url.strip().rsplit("@", 1)[-1]  # never a password
        raise SystemExit(f"HARVEST_SCRAPYD_URLS: {shown!r} is not a "
                         "Scrapyd URL like http://127.0.0.1:6800 (ScrapydWeb speaks plain HTTP "
                         "to Scrapyd, without a path).")
    username = unquote(parts.username or "") or os.environ.get("SCRAPYD_USERNAME", "")
    password = unquote(parts.password or "") or os.environ.get("SCRAPYD_PASSWORD", "")
    if not username or not password:
        raise SystemExit(f"ScrapydWeb needs the account of the Scrapyd at {parts.hostname}: set "
                         "SCRAPYD_USERNAME and SCRAPYD_PASSWORD.")
    return username, password, parts.hostname, str(port), ""


def _default_node() -> str:
    """The local Scrapyd of `harvest scrapyd start`, wherever SCRAPYD_HTTP_PORT puts it."""
    return f"http://127.0.0.1:{os.environ.get('SCRAPYD_HTTP_PORT') or 6800}"


def _hide_secrets(record: logging.LogRecord) -> bool:
    """ScrapydWeb logs the UI password at start-up: keep the line, drop the secret."""
    if isinstance(record.msg, str) and record.msg.startswith("Basic auth enabled"):
        record.msg, record.args = "Basic auth enabled for the web UI", ()
    return True


def _install_log_filter() -> None:
    # Only once ScrapydWeb has created its logger (the second read of this file): a logger
    # created before ScrapydWeb's logging dictConfig would be disabled by it.
    name = "scrapydweb.utils.check_app_config"
    if name not in logging.Logger.manager.loggerDict:
        return
    logger = logging.getLogger(name)
    if not any(getattr(f, "__name__", "") == "_hide_secrets" for f in logger.filters):
        logger.addFilter(_hide_secrets)


def _private_dir(path: Path) -> Path:
    # ScrapydWeb stores the UI login in its metadata database: keep the directory private.
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


_install_log_filter()
_UI_LOGIN = _ui_credentials()
_NODES = [_node(url) for url in
          (os.environ.get("HARVEST_SCRAPYD_URLS") or _default_node()).split(",")
          if url.strip()]
_LOCAL = [f"{host}:{port}" for _, _, host, port, _ in _NODES if host in _LOOPBACK]

############################## Web UI ##############################
SCRAPYDWEB_BIND = "127.0.0.1"
SCRAPYDWEB_PORT = _port()
ENABLE_AUTH = True
USERNAME, PASSWORD = _UI_LOGIN
ENABLE_HTTPS = False

############################## Scrapyd nodes ##############################
SCRAPYD_SERVERS = _NODES
# The start-up connectivity check prints every node's password to stdout: skip it (the UI
# shows a node that is down on its own pages).
CHECK_SCRAPYD_SERVERS = False
SCRAPYD_SERVERS_PUBLIC_URLS = None
SCRAPYD_LOG_EXTENSIONS = [".log", ".log.gz", ".txt"]

# A Scrapyd on this machine: ScrapydWeb reads its job logs from disk, and LogParser (run by
# ScrapydWeb as a subprocess) turns them into the stats pages. Remote nodes are read over HTTP.
LOCAL_SCRAPYD_SERVER = _LOCAL[0] if _LOCAL else ""
LOCAL_SCRAPYD_LOGS_DIR = ""
ENABLE_LOGPARSER = False
if _LOCAL:
    # Scrapyd creates this directory at its first job; ScrapydWeb insists it exists at start.
    _logs = _home().absolute() / "scrapyd" / "logs"
    _logs.mkdir(parents=True, exist_ok=True)
    LOCAL_SCRAPYD_LOGS_DIR = str(_logs)
    ENABLE_LOGPARSER = True
BACKUP_STATS_JSON_FILE = True

############################## Data ##############################
# Absolute paths: otherwise ScrapydWeb writes its databases into site-packages.
DATA_PATH = str(_private_dir(_home().absolute() / "scrapydweb"))
DATABASE_URL = "sqlite:///" + str(_private_dir(Path(DATA_PATH) / "database"))

############################## Alerts: off ##############################
# harvester sends its own alerts; ScrapydWeb must not pick up tokens from the environment.
ENABLE_MONITOR = False
ENABLE_SLACK_ALERT = False
ENABLE_TELEGRAM_ALERT = False
ENABLE_EMAIL_ALERT = False
SLACK_TOKEN = ""
TELEGRAM_TOKEN = ""
TELEGRAM_CHAT_ID = 0
EMAIL_PASSWORD = ""

############################## Scrapy projects ##############################
# Deploys go through `harvest scrapyd deploy`; ScrapydWeb does not build eggs from a checkout.
SCRAPY_PROJECTS_DIR = ""

############################## System ##############################
DEBUG = False
VERBOSE = False
