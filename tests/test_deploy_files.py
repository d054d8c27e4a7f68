"""The deploy files, checked without a Docker engine: the compose file parses, publishes ports
on 127.0.0.1 only, takes every secret from the environment and runs the same commands as the
tests do; the Dockerfile installs Chromium and drops root; ScrapydWeb's settings file reads
everything from the environment and refuses to start without a login."""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path
from typing import Any

import click
import pytest

from harvester.cli import main
from harvester.config import HarvestConfig
from harvester.services import scrapydproc
from tests.conftest import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
UI_SETTINGS = ROOT / "deploy" / "scrapydweb" / "scrapydweb_settings_v11.py"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
FROM_ENV = re.compile(r"\$\{[A-Z][A-Z0-9_]*(:?[?-][^}]*)?\}")
SERVICES = {"postgres", "scrapyd", "deploy", "scheduler", "api", "scrapydweb", "prometheus",
            "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return compose["services"][name]


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = [str(item).partition("=") for item in env]
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_every_published_port_is_on_loopback(compose: dict[str, Any]) -> None:
    published = 0
    for name, svc in compose["services"].items():
        assert svc.get("network_mode") != "host", f"{name} uses the host network"
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
                assert str(port).count(":") == 2, f"{name}: {port} (host port and address)"
    assert published >= 5  # scrapyd, scrapydweb, api, prometheus, grafana


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            if value is None:
                continue  # passed through from the host's environment
            if SECRET_NAME.search(key):
                assert FROM_ENV.fullmatch(value), f"{name}: {key} must come from the environment"
            for user_info in re.findall(r"://([^@/]+)@", value):
                _, _, password = user_info.partition(":")
                assert not password or FROM_ENV.fullmatch(password), f"{name}: {key}"
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text(encoding="utf-8")))
    assert {"POSTGRES_PASSWORD", "SCRAPYD_USERNAME", "SCRAPYD_PASSWORD", "SCRAPYDWEB_USERNAME",
            "SCRAPYDWEB_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required


def test_scrapyd_runs_like_harvest_scrapyd_start(compose: dict[str, Any]) -> None:
    svc = service(compose, "scrapyd")
    env = environment(svc)
    script = command(svc)
    assert script[:2] == ["sh", "-c"]
    steps = [shlex.split(step.replace("$$", "$")) for step in script[2].split("&&")]
    home = Path(str(env["HARVEST_HOME"]))
    # The same directory and config file `harvest scrapyd start` (and tests/test_scrapydweb.py)
    # use: deploy/scrapyd.conf copied into $HARVEST_HOME/scrapyd, Scrapyd started there.
    root = scrapydproc.Paths.of(HarvestConfig(home=home)).root
    assert (scrapydproc.project_dir() / "deploy" / "scrapyd.conf").is_file()
    assert ["harvest", "migrate"] in steps
    assert ["cp", "/app/deploy/scrapyd.conf", "$HARVEST_HOME/scrapyd/scrapyd.conf"] in steps
    assert ["cd", "$HARVEST_HOME/scrapyd"] in steps and steps[-1] == ["exec", "scrapyd"]
    assert root == home / "scrapyd"
    # Reachable on the compose network, published on the host's loopback only.
    assert env["SCRAPYD_BIND_ADDRESS"] == "0.0.0.0" and env["SCRAPYD_HTTP_PORT"] == "6800"
    assert svc["ports"] == ["127.0.0.1:6800:6800"]
    assert "harvest-home:/var/lib/harvester" in svc["volumes"]
    assert "bind_address      = 127.0.0.1" in (ROOT / "deploy" / "scrapyd.conf").read_text()


def _resolve(args: list[str]) -> click.Command:
    """The ``harvest`` command ``args`` names, its options parsed (not run)."""
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        found = command.get_command(click.Context(command), rest[0])
        assert found is not None, f"harvest has no command {' '.join(args)!r}"
        command, rest = found, rest[1:]
    command.make_context("harvest", rest)
    return command


@pytest.mark.parametrize(("name", "expected"), [
    ("scheduler", ["harvest", "scheduler"]),
    ("deploy", ["harvest", "scrapyd", "deploy"]),
    ("api", ["harvest", "serve", "--host", "0.0.0.0", "--port", "8000"]),
])
def test_services_run_harvest_commands(compose: dict[str, Any], name: str,
                                       expected: list[str]) -> None:
    assert command(service(compose, name)) == expected
    _resolve(expected[1:])


def test_healthcheck_and_default_commands_exist(compose: dict[str, Any]) -> None:
    check = service(compose, "scrapyd")["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "harvest"
    _resolve(check[2:])
    _resolve(["migrate"])
    _resolve(["crawl", "--all"])


def test_services_share_one_database_and_scrapyd(compose: dict[str, Any]) -> None:
    urls = {environment(service(compose, n)).get("HARVEST_DATABASE_URL")
            for n in ("scrapyd", "deploy", "scheduler", "api")}
    assert len(urls) == 1 and next(iter(urls), "").endswith("@postgres:5432/harvester")
    for name in ("deploy", "scheduler", "scrapydweb"):
        assert environment(service(compose, name))["HARVEST_SCRAPYD_URLS"] == \
            "http://scrapyd:6800"


def test_scrapydweb_service_uses_its_own_image_and_settings(compose: dict[str, Any]) -> None:
    svc = service(compose, "scrapydweb")
    assert svc["build"]["target"] == "scrapydweb"
    assert command(svc) == ["scrapydweb", "--bind", "0.0.0.0"]
    assert svc["ports"] == ["127.0.0.1:5000:5000"]
    stage = _stages()["scrapydweb"]
    assert "COPY deploy/scrapydweb/scrapydweb_settings_v11.py /app/deploy/scrapydweb/" in stage
    assert "WORKDIR /app/deploy/scrapydweb" in stage


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [])
        current.append(line)
    return stages


def test_dockerfile_installs_chromium_and_drops_root() -> None:
    stages = _stages()
    assert list(stages) == ["scrapydweb", "harvester"]  # the last one is `docker build .`
    for name, lines in stages.items():
        assert lines[0].startswith("FROM python:3.11-slim-bookworm "), name
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), f"{name} runs as root"
        last_user = max(i for i, line in enumerate(lines) if line.startswith("USER "))
        cmd = max(i for i, line in enumerate(lines) if line.startswith("CMD "))
        assert last_user < cmd, name
        for line in lines:
            if line.startswith(("ENV ", "ARG ")):
                assert not SECRET_NAME.search(line), f"{name}: {line}"
    app = stages["harvester"]
    assert any(line.startswith("RUN apt-get update") and "install" in line
               and " chromium" in line for line in app)
    assert any("pip install -r requirements.txt" in line for line in app)
    assert app[-1] == 'CMD ["harvest", "crawl", "--all"]'
    assert any("pip install -r /app/deploy/scrapydweb/requirements.txt" in line
               for line in stages["scrapydweb"])


UI_ENV = {
    "SCRAPYDWEB_USERNAME": "ops", "SCRAPYDWEB_PASSWORD": "ui-secret", "SCRAPYDWEB_PORT": "5001",
    "SCRAPYD_USERNAME": "runner", "SCRAPYD_PASSWORD": "p:@#ss",
    "HARVEST_SCRAPYD_URLS": "http://127.0.0.1:6801, http://other:7000",
}


def _ui_settings(monkeypatch: pytest.MonkeyPatch, home: Path,
                 **env: str | None) -> dict[str, Any]:
    monkeypatch.setenv("HARVEST_HOME", str(home))
    for key, value in {**UI_ENV, **env}.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    return {k: v for k, v in runpy.run_path(str(UI_SETTINGS)).items() if k.isupper()}


def test_scrapydweb_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _ui_settings(monkeypatch, tmp_path)
    assert (settings["SCRAPYDWEB_BIND"], settings["SCRAPYDWEB_PORT"]) == ("127.0.0.1", 5001)
    assert settings["ENABLE_AUTH"] is True
    assert (settings["USERNAME"], settings["PASSWORD"]) == ("ops", "ui-secret")
    assert settings["SCRAPYD_SERVERS"] == [("runner", "p:@#ss", "127.0.0.1", "6801", ""),
                                           ("runner", "p:@#ss", "other", "7000", "")]
    assert settings["DATA_PATH"] == str(tmp_path / "scrapydweb")
    assert settings["DATABASE_URL"] == f"sqlite:///{tmp_path}/scrapydweb/database"
    assert (tmp_path / "scrapydweb").stat().st_mode & 0o077 == 0  # holds the UI login
    assert settings["LOCAL_SCRAPYD_SERVER"] == "127.0.0.1:6801"
    assert settings["LOCAL_SCRAPYD_LOGS_DIR"] == str(tmp_path / "scrapyd" / "logs")
    assert settings["ENABLE_LOGPARSER"] is True
    assert not any(settings[k] for k in ("ENABLE_MONITOR", "ENABLE_SLACK_ALERT",
                                         "ENABLE_TELEGRAM_ALERT", "ENABLE_EMAIL_ALERT",
                                         "SLACK_TOKEN", "TELEGRAM_TOKEN", "EMAIL_PASSWORD"))


def test_scrapydweb_settings_for_remote_nodes_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _ui_settings(monkeypatch, tmp_path,
                            HARVEST_SCRAPYD_URLS="http://user:pw@scrapyd:6800")
    assert settings["SCRAPYD_SERVERS"] == [("user", "pw", "scrapyd", "6800", "")]
    assert (settings["ENABLE_LOGPARSER"], settings["LOCAL_SCRAPYD_LOGS_DIR"]) == (False, "")
    # Unset, the node is the local one, on the port `harvest scrapyd start` listens on.
    local = _ui_settings(monkeypatch, tmp_path, HARVEST_SCRAPYD_URLS=None,
                         SCRAPYD_HTTP_PORT="6900")
    assert local["SCRAPYD_SERVERS"] == [("runner", "p:@#ss", "127.0.0.1", "6900", "")]


@pytest.mark.parametrize(("env", "message"), [
    ({"SCRAPYDWEB_PASSWORD": None}, "set SCRAPYDWEB_USERNAME and SCRAPYDWEB_PASSWORD"),
    ({"SCRAPYDWEB_USERNAME": ""}, "set SCRAPYDWEB_USERNAME and SCRAPYDWEB_PASSWORD"),
    ({"SCRAPYD_PASSWORD": None}, "set SCRAPYD_USERNAME and SCRAPYD_PASSWORD"),
    ({"SCRAPYDWEB_PORT": "http"}, "SCRAPYDWEB_PORT must be a TCP port number"),
    ({"HARVEST_SCRAPYD_URLS": "https://node:6800"}, "is not a Scrapyd URL"),
    ({"HARVEST_SCRAPYD_URLS": "http://127.0.0.1:abc"}, "is not a Scrapyd URL"),  # traceback
])
def test_scrapydweb_settings_refuse_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str | None], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        _ui_settings(monkeypatch, tmp_path, **env)
    text = str(exc.value)
    assert message in text and text.count(". ") == 0 and text.endswith(".")
    assert "ui-secret" not in text and "p:@#ss" not in text
