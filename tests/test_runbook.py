"""The runbook cannot rot: every `harvest` command in docs/operations.md runs, in order,
against a test instance (embedded PostgreSQL, a Scrapyd node, local sources named as in
the runbook) and must succeed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harvester.services.localsite import LocalSite
from tests.conftest import ROOT, free_port, write_sources
from tests.feeds import items, rss
from tests.scrapydnode import AUTH, CREDENTIALS

RUNBOOK = ROOT / "docs" / "operations.md"
FENCE = re.compile(r"```sh\n(.*?)```", re.DOTALL)
COMMENT = re.compile(r"\s+#\s.*$")
# Services: started, checked, stopped (they run until told to stop).
SERVICES = ("harvest serve",)
IDLE_TIMEOUT_S = 120


def runbook_commands() -> list[str]:
    commands = []
    for block in FENCE.findall(RUNBOOK.read_text(encoding="utf-8")):
        for line in block.splitlines():
            line = COMMENT.sub("", line).strip()
            if line.startswith("harvest "):
                commands.append(line)
    return commands


def test_the_runbook_has_commands_for_every_incident() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    for incident in ("the database is down", "a source is rate-limiting us",
                     "Scrapyd is down", "the disk is filling up", "alerts are not arriving",
                     "a bad deploy"):
        assert f"## Incident: {incident}" in text
    assert len(runbook_commands()) >= 30


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A harvester of its own: embedded PostgreSQL under HARVEST_HOME, sources krebs and
    lwn on a local site, a Scrapyd node, data from one crawl."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    for name in ("krebs", "lwn"):
        (root / f"{name}.xml").write_text(rss(items(name, 4)))
    # Outside pytest's temporary tree: the embedded server runs as its own OS user and needs
    # traverse rights on every parent, which pytest resets on its base directory.
    home = Path(tempfile.mkdtemp(prefix="harvest-runbook-", dir="/tmp"))
    with LocalSite(root) as site:
        sources = write_sources(tmp_path / "sources.toml", [
            {"name": n, "kind": "feed", "interval": "1h", "urls": [f"{site.url}/{n}.xml"]}
            for n in ("krebs", "lwn")],
            {"security": {"keywords": ["ransomware"], "weight": 2.0}})
        scrapyd_port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "HARVEST_DATABASE_URL"}
        env.update({
            **CREDENTIALS,
            "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}",
            "HARVEST_HOME": str(home), "HARVEST_SOURCES": str(sources), "COLUMNS": "200",
            "SCRAPYD_HTTP_PORT": str(scrapyd_port),
            "HARVEST_SCRAPYD_URLS": f"http://127.0.0.1:{scrapyd_port}",
            "HARVEST_API_PORT": str(free_port()),
        })
        for setup in ("harvest crawl --all", "harvest scrapyd start"):
            done = _run(setup, env)
            assert done.returncode == 0, done.stdout + done.stderr
        try:
            yield env
        finally:
            _run("harvest scrapyd stop", env)
            _run("harvest db stop", env)
            shutil.rmtree(home, ignore_errors=True)


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def _wait_idle(env: dict[str, str]) -> None:
    """Before each step the instance is at rest: no Scrapyd job pending or running."""
    url = env["HARVEST_SCRAPYD_URLS"] + "/daemonstatus.json"
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            status = requests.get(url, auth=AUTH, timeout=10).json()
        except requests.RequestException:
            return  # no node (a step stopped it): nothing to wait for
        if not status.get("running") and not status.get("pending"):
            return
        time.sleep(0.5)


def _serve(command: str, env: dict[str, str]) -> str | None:
    process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{env['HARVEST_API_PORT']}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"exited {process.returncode}: {process.stdout.read()}"
            try:
                if requests.get(f"{base}/health", timeout=10).status_code == 200:
                    return None
            except requests.ConnectionError:
                time.sleep(0.3)
        return "did not answer /health with 200 within 60 s"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_runbook_command_runs(instance: dict[str, str]) -> None:
    failures = []
    commands = runbook_commands()
    for command in commands:
        _wait_idle(instance)
        if command.startswith(SERVICES):
            problem = _serve(command, instance)
        else:
            done = _run(command, instance)
            problem = None if done.returncode == 0 else (
                f"exit {done.returncode}: {(done.stdout + done.stderr).strip()[-800:]}")
        if problem:
            failures.append(f"{command}\n    {problem}")
    assert not failures, f"{len(failures)} of {len(commands)} runbook commands failed:\n" + (
        "\n".join(failures))
