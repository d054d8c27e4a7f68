"""ScrapydWeb over a real Scrapyd: a crawl job scheduled through Scrapyd's API lands in
PostgreSQL and shows up, finished, on ScrapydWeb's jobs page as headless Chromium sees it.

Scrapyd is started with ``harvest scrapyd start`` and ScrapydWeb with ``make ui`` (its venv
built by ``make ui-install``), exactly as an operator does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests
from playwright.sync_api import Page, sync_playwright

from harvester.services.localsite import LocalSite
from harvester.spiders.rendered import DEFAULT_CHROMIUM
from tests.conftest import ROOT, free_port, harvest, wait_for, write_sources
from tests.feeds import items, rss

pytestmark = pytest.mark.skipif(
    shutil.which(DEFAULT_CHROMIUM) is None or shutil.which("make") is None,
    reason="needs Chromium (apt-get install -y chromium) and make",
)

SCRAPYD_LOGIN = ("scrapyd-test", "scrapyd-test-password")
UI_LOGIN = ("ui-test", "ui-test-password")
ARTIFACTS = ROOT / "tests" / "artifacts"
UI_INSTALL_TIMEOUT_S = 300  # the first pip install of ScrapydWeb's pinned set; cached after


@dataclass(frozen=True, slots=True)
class Service:
    url: str
    env: dict[str, str]
    output: Path | None = None


@pytest.fixture
def scrapyd(site: LocalSite, home: Path, tmp_path: Path) -> Iterator[Service]:
    """A Scrapyd with the project deployed, whose jobs crawl a local feed source."""
    (site.root / "ui.xml").write_text(rss(items("ui", 3)))
    sources = write_sources(tmp_path / "sources.toml", [
        {"name": "ui-feed", "kind": "feed", "urls": [f"{site.url}/ui.xml"]},
    ])
    port = free_port()
    env = {
        "SCRAPYD_HTTP_PORT": str(port),
        "SCRAPYD_USERNAME": SCRAPYD_LOGIN[0],
        "SCRAPYD_PASSWORD": SCRAPYD_LOGIN[1],
        "HARVEST_SOURCES": str(sources),
        "HARVEST_SCRAPYD_URLS": f"http://127.0.0.1:{port}",
    }
    try:
        started = harvest("scrapyd", "start", home=home, env=env, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "deployed harvester" in started.stdout, started.stdout
        yield Service(f"http://127.0.0.1:{port}", env)
    finally:
        harvest("scrapyd", "stop", home=home, env=env, timeout=60)


@pytest.fixture
def scrapydweb(scrapyd: Service, home: Path) -> Iterator[Service]:
    """``make ui`` on a free port, stopped with its LogParser child at the end."""
    built = subprocess.run(["make", "-s", "ui-install"], cwd=ROOT, capture_output=True,
                           text=True, timeout=UI_INSTALL_TIMEOUT_S, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    port = free_port()
    env = {
        **os.environ, **scrapyd.env, "HARVEST_HOME": str(home), "SCRAPYDWEB_PORT": str(port),
        "SCRAPYDWEB_USERNAME": UI_LOGIN[0], "SCRAPYDWEB_PASSWORD": UI_LOGIN[1],
    }
    log = home / "scrapydweb.out"
    with log.open("wb") as out:
        process = subprocess.Popen(["make", "-s", "ui"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url, process, log), "ScrapydWeb to answer", every=0.3)
        yield Service(url, env, output=log)
    finally:
        _stop_group(process)


def _answers(url: str, process: subprocess.Popen[bytes], log: Path) -> int | None:
    if process.poll() is not None:
        raise AssertionError(f"ScrapydWeb exited ({process.returncode}): "
                             + log.read_text(errors="replace")[-3000:])
    try:
        return requests.get(url + "/1/jobs/", timeout=5).status_code
    except requests.RequestException:
        return None


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def run_job(scrapyd: Service, source: str) -> str:
    """Schedule a feed crawl as the scheduler does; return its job id once finished."""
    auth = SCRAPYD_LOGIN
    answer = requests.post(f"{scrapyd.url}/schedule.json", auth=auth, timeout=10,
                           data={"project": "harvester", "spider": "feed", "source": source})
    assert answer.json()["status"] == "ok", answer.text
    job = str(answer.json()["jobid"])

    def finished() -> dict[str, Any] | None:
        jobs = requests.get(f"{scrapyd.url}/listjobs.json", params={"project": "harvester"},
                            auth=auth, timeout=10).json()
        return next((j for j in jobs["finished"] if j["id"] == job), None)

    wait_for(finished, f"Scrapyd job {job} to finish", every=0.3)
    return job


def _stats_table(text: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in text.splitlines() if line.count("\t") == 1)


def _final_stats(page: Page, url: str) -> str | None:
    """The stats page's text once it shows the finished job: LogParser parses the logs every
    10 s, so a JSON written while the job ran can be stale for one round."""
    page.goto(url, wait_until="networkidle")
    text = page.inner_text("body")
    if _stats_table(text).get("finish_reason") == "finished":
        return text
    time.sleep(2)
    return None


def listening_addresses(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_scrapydweb_lists_the_finished_scrapyd_job(
    scrapyd: Service, scrapydweb: Service, db: psycopg.Connection[Any], home: Path
) -> None:
    job = run_job(scrapyd, "ui-feed")

    stored = db.execute("SELECT count(*) FROM signals WHERE source = 'ui-feed'").fetchone()
    assert stored == (3,)
    runs = db.execute("SELECT job_id, finish_reason, stored FROM crawl_runs").fetchall()
    assert runs == [(job, "finished", 3)]

    assert requests.get(scrapydweb.url + "/1/jobs/", timeout=10).status_code == 401
    assert requests.get(scrapydweb.url + "/1/jobs/", auth=("ui-test", "wrong"),
                        timeout=10).status_code == 401
    port = int(scrapydweb.url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}

    ARTIFACTS.mkdir(exist_ok=True)
    shots = {name: ARTIFACTS / f"scrapydweb-{name}.png" for name in ("jobs", "stats")}
    for shot in shots.values():
        shot.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=DEFAULT_CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(
                http_credentials={"username": UI_LOGIN[0], "password": UI_LOGIN[1]},
                viewport={"width": 1400, "height": 900},
            )
            page = context.new_page()
            response = page.goto(scrapydweb.url + "/1/jobs/", wait_until="networkidle")
            assert response is not None and response.status == 200
            # The jobs table repeats its rows for the frozen columns: take the visible copy.
            cell = page.get_by_text(job, exact=True).locator("visible=true").first
            cell.wait_for(timeout=15_000)
            row = page.locator("tr", has=cell).inner_text()
            assert "harvester" in row and "feed" in row
            finished = page.locator(f"a[href*='/{job}/'][href*='job_finished=True']")
            assert finished.count() > 0, "ScrapydWeb does not show the job as finished"
            assert page.get_by_text("LogParser v").count() > 0, "LogParser is not running"
            page.screenshot(path=str(shots["jobs"]), full_page=True)

            text = wait_for(lambda: _final_stats(page, f"{scrapydweb.url}/1/log/stats/"
                                                 f"harvester/feed/{job}/?job_finished=True"),
                            "ScrapydWeb's stats page to show the finished job", 45, every=0.3)
            page.screenshot(path=str(shots["stats"]), full_page=True)
        finally:
            browser.close()
    # Read from the local Scrapyd's logs directory: LogParser's JSON, or the log itself when
    # LogParser (a 10 s round) has not got to it yet.
    assert re.search(rf"Using local (stats|logfile): .*{home}/scrapyd/logs/harvester/feed/{job}"
                     r"\.(json|log)", text), text[:2000]
    assert _stats_table(text)["scraped_items"] == "3"
    for shot in shots.values():
        assert shot.stat().st_size > 20_000, f"{shot.name} is too small to show the page"
    assert scrapydweb.output is not None
    output = scrapydweb.output.read_text(errors="replace")
    assert UI_LOGIN[1] not in output and SCRAPYD_LOGIN[1] not in output
