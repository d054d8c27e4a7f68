"""`harvest serve`: /health follows the database, sources and spool; /metrics merges what
crawl processes counted with what PostgreSQL holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import requests

from harvester.migrations import HEAD
from harvester.services import embedded
from harvester.services.localsite import LocalSite
from tests.conftest import ROOT, free_port, harvest, write_sources
from tests.feeds import items, rss


@contextmanager
def serving(home: Path, env: dict[str, str] | None = None,
            sources: Path | None = None) -> Iterator[str]:
    port = free_port()
    args = ["--sources", str(sources)] if sources else []
    full_env = {**os.environ, "HARVEST_HOME": str(home), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "harvester.cli", *args, "serve", "--port", str(port)],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/health", timeout=10)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"harvest serve did not start: {process.stdout.read()}"
                                         ) from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _health(base: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{base}/health", timeout=30)
    return response.status_code, response.json()


def test_health_follows_the_database_down_and_back(
    private_pg: tuple[Path, str], home: Path, tmp_path: Path
) -> None:
    pg_dir, url = private_pg
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "a", "kind": "feed", "urls": ["http://127.0.0.1:9/a.xml"]}])
    with serving(home, {"HARVEST_DATABASE_URL": url}, sources) as base:
        status, body = _health(base)
        assert status == 200 and body["status"] == "healthy", body
        assert body["version"] and body["checks"]["database"]["ok"]

        embedded.stop(pg_dir, mode="fast")
        status, body = _health(base)
        assert status == 503 and body["status"] == "unhealthy"
        detail = body["checks"]["database"]["detail"]
        assert detail.startswith("unreachable: No such file or directory;"), detail
        assert str(pg_dir) not in detail and "socket" not in detail  # /health is open

        embedded.start(pg_dir)
        status, body = _health(base)
        assert status == 200 and body["status"] == "healthy", body


def test_serve_starts_while_its_database_is_down_and_health_says_what_to_run(
    private_pg: tuple[Path, str], home: Path, tmp_path: Path
) -> None:
    """A service restarted during a database outage must answer /health (503 and why), not
    refuse to start; when the server is back with a schema behind, /health says to migrate."""
    pg_dir, url = private_pg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE blank")
    # libpq's key=value form, which `harvest migrate` must take as psycopg does.
    blank = psycopg.conninfo.make_conninfo(url, dbname="blank")
    assert not blank.startswith("postgresql:")
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "a", "kind": "feed", "urls": ["http://127.0.0.1:9/a.xml"]}])
    embedded.stop(pg_dir, mode="fast")
    with serving(home, {"HARVEST_DATABASE_URL": blank}, sources) as base:
        status, body = _health(base)
        assert status == 503 and body["status"] == "unhealthy", body
        assert "harvest db start" in body["checks"]["database"]["detail"]

        embedded.start(pg_dir)
        status, body = _health(base)
        assert status == 503 and body["status"] == "unhealthy", body
        assert body["checks"]["database"]["detail"].startswith("the schema is at none")
        assert "run `harvest migrate`" in body["checks"]["database"]["detail"]

        migrated = harvest("--sources", str(sources), "migrate", home=home,
                           env={"HARVEST_DATABASE_URL": blank})
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        status, body = _health(base)
        assert status == 200 and body["status"] == "healthy", body

        # An older release put back after a newer one migrated the database: `migrate`,
        # every command and a restarted `serve` died on a 95-line Alembic traceback, and
        # `verify` said to run `harvest migrate`.
        with psycopg.connect(blank, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999'")
        said = (f"the database's schema is 9999, which this code (schema {HEAD}) does not know: "
                "a newer harvest migrated it; run that version, or restore a backup taken "
                "before it")
        status, body = _health(base)
        assert status == 503 and body["checks"]["database"]["detail"] == said, body
        for command in (["migrate"], ["top"], ["verify"]):
            result = harvest("--sources", str(sources), *command, home=home,
                             env={"HARVEST_DATABASE_URL": blank})
            assert result.returncode != 0 and said in result.stdout + result.stderr, command
            assert "Traceback" not in result.stderr
        # A crawl said it would spool, then wrote its run (and items) into the schema it
        # does not know: everything goes to the spool, for the newer harvest to replay.
        crawled = harvest("--sources", str(sources), "crawl", "a", home=home,
                          env={"HARVEST_DATABASE_URL": blank})
        assert said in crawled.stdout + crawled.stderr, crawled.stdout + crawled.stderr
        with psycopg.connect(blank, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM crawl_runs").fetchone() == (0,)
        assert list((home / "spool").glob("*.jsonl")), crawled.stdout
    with serving(home, {"HARVEST_DATABASE_URL": blank}, sources) as base:
        status, body = _health(base)
        assert status == 503 and body["checks"]["database"]["detail"] == said, body


def test_stale_disabled_sources_and_spool_degrade_health(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "fresh", "kind": "feed", "interval": "1h", "urls": ["http://127.0.0.1:9/f"]},
        {"name": "old", "kind": "feed", "interval": "1h", "urls": ["http://127.0.0.1:9/o"]},
        {"name": "broken", "kind": "feed", "interval": "1h", "urls": ["http://127.0.0.1:9/b"]},
        {"name": "new", "kind": "feed", "interval": "1h", "urls": ["http://127.0.0.1:9/n"]},
        {"name": "tried", "kind": "feed", "interval": "1h", "urls": ["http://127.0.0.1:9/t"]},
        # Weekly by cron (its interval is the default hour): two days old is fresh.
        {"name": "weekly", "kind": "feed", "cron": "0 6 * * 1",
         "urls": ["http://127.0.0.1:9/w"]},
    ])
    db.execute("""INSERT INTO sources_state (source, last_attempt, last_success, disabled) VALUES
        ('fresh', now(), now() - interval '30 minutes', false),
        ('old', now(), now() - interval '5 hours', false),
        ('broken', now(), NULL, true),
        ('tried', now(), NULL, false),
        ('weekly', now(), now() - interval '2 days', false),
        ('gone', now(), NULL, true)""")
    with serving(home, sources=sources) as base:
        status, body = _health(base)
        assert status == 200 and body["status"] == "degraded"
        report = body["checks"]["sources"]["sources"]
        states = {k: v["state"] for k, v in report.items()}
        assert states == {"fresh": "fresh", "old": "stale", "broken": "disabled",
                          "new": "never run", "tried": "never succeeded", "weekly": "fresh"}
        assert report["weekly"]["allowed_s"] == 3 * 7 * 86400
        detail = body["checks"]["sources"]["detail"]
        assert "old stale" in detail and "broken disabled" in detail
        assert "tried never succeeded" in detail
        # Prometheus's stale rule measures in the same period.
        text = requests.get(f"{base}/metrics", timeout=30).text
        assert 'harvest_source_interval_seconds{source="weekly"} 604800.0' in text
        assert "harvest_sources_file_readable 1.0" in text
        # A source taken out of the file kept HarvestSourceDisabled firing for good.
        assert 'harvest_source_disabled{source="broken"} 1.0' in text
        assert 'harvest_source_disabled{source="gone"}' not in text
        # A broken file took every interval, and so every stale alert, away in silence.
        good = sources.read_text()
        sources.write_text(good + "\ninterval = \n")
        text = requests.get(f"{base}/metrics", timeout=30).text
        assert "harvest_sources_file_readable 0.0" in text
        assert "harvest_source_interval_seconds{" not in text
        sources.write_text(good)
        assert "`harvest sources enable NAME`" in detail

        db.execute("UPDATE sources_state SET last_success = now(), disabled = false")
        spool_dir = home / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        (spool_dir / "batch.jsonl").write_text("{}\n")
        status, body = _health(base)
        assert body["status"] == "degraded" and not body["checks"]["spool"]["ok"]
        assert "harvest replay" in body["checks"]["spool"]["detail"]
        (spool_dir / "batch.jsonl").rename(spool_dir / "batch.refused")
        status, body = _health(base)
        assert body["status"] == "degraded" and not body["checks"]["spool"]["ok"]
        assert "1 refused" in body["checks"]["spool"]["detail"]
        (spool_dir / "batch.refused").unlink()
        assert _health(base)[1]["status"] == "healthy"
        # A killed crawl's batch (.tmp, which a replay takes) waited unseen.
        left = spool_dir / "batch.tmp"
        left.write_text("{}\n")
        os.utime(left, (time.time() - 1200, time.time() - 1200))
        status, body = _health(base)
        assert body["checks"]["spool"]["detail"].startswith("1 spooled batches wait")
        assert "harvest_spool_pending_batches 1.0" in requests.get(f"{base}/metrics",
                                                                  timeout=30).text
        left.unlink()
    # The stale factor is the API's to read (not every command's): 6 intervals of an hour.
    db.execute("UPDATE sources_state SET last_success = now() - interval '5 hours' "
               "WHERE source = 'old'")
    with serving(home, {"HARVEST_STALE_FACTOR": "6"}, sources) as base:
        old = _health(base)[1]["checks"]["sources"]["sources"]["old"]
        assert old["state"] == "fresh" and old["allowed_s"] == 6 * 3600, old
    # A kind switched off (HARVEST_FEED_ENABLED=false) is not crawled: its sources' stale
    # alerts fired while /health let them be.
    with serving(home, {"HARVEST_FEED_ENABLED": "false"}, sources) as base:
        text = requests.get(f"{base}/metrics", timeout=30).text
        assert "harvest_sources_file_readable 1.0" in text  # read, and nothing crawled
        assert "harvest_source_interval_seconds{" not in text, text
        assert _health(base)[1]["checks"]["sources"]["sources"] == {}


def test_metrics_after_a_crawl(site: LocalSite, db: psycopg.Connection[Any], home: Path,
                               tmp_path: Path) -> None:
    good = items("m", 3)
    good[0]["date"] = "yesterday-ish"  # kept, without its date
    (site.root / "m.xml").write_text(rss([*good, {"title": "no link"}]))
    (site.root / "o.xml").write_text(rss(items("o", 2)))
    # Two 500s retried away: only the final 200 was counted, and one retry.
    site.set_status("/o.xml", 500, times=2)
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "met", "kind": "feed", "interval": "2h", "urls": [f"{site.url}/m.xml"]},
        {"name": "other", "kind": "feed", "urls": [f"{site.url}/o.xml"]}])
    crawl = harvest("--sources", str(sources), "crawl", "met", "other", "-s",
                    "AUTOTHROTTLE_ENABLED=False", home=home)
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr

    with serving(home, sources=sources) as base:
        text = requests.get(f"{base}/metrics", timeout=30).text
    labels = 'source="met",spider="feed"'
    assert f"harvest_items_scraped_total{{{labels}}} 3.0" in text
    assert 'harvest_items_scraped_total{source="other",spider="feed"} 2.0' in text
    assert f"harvest_items_stored_total{{{labels}}} 3.0" in text
    assert f'harvest_items_rejected_total{{reason="missing_link_and_id",{labels}}} 1.0' in text
    assert f'harvest_fields_dropped_total{{field="published_at",{labels}}} 1.0' in text
    assert f'harvest_http_responses_total{{{labels},status="200"}} 1.0' in text
    other = 'source="other",spider="feed"'
    assert f'harvest_http_responses_total{{{other},status="500"}} 2.0' in text
    assert f'harvest_http_responses_total{{{other},status="200"}} 1.0' in text
    assert f"harvest_retries_total{{{other}}} 2.0" in text
    assert f'harvest_runs_total{{outcome="succeeded",{labels}}} 1.0' in text
    assert f"harvest_run_duration_seconds_count{{{labels}}} 1.0" in text
    assert 'harvest_signals{source="met"} 3.0' in text
    assert 'harvest_source_interval_seconds{source="met"} 7200.0' in text
    assert "harvest_database_up 1.0" in text
    assert "harvest_spool_pending_batches 0.0" in text
    assert 'harvest_spool_set_aside_files{reason="refused"} 0.0' in text
    assert 'harvest_source_last_success_timestamp_seconds{source="met"}' in text


def test_alerts_given_up_degrade_health_and_show_in_metrics(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "quiet", "kind": "feed", "urls": ["http://127.0.0.1:9/q"]}])
    db.execute("""INSERT INTO notifications (kind, signal_id, channel, status, payload)
                  VALUES ('signal', 1, 'slack', 'given_up', '{}'),
                         ('signal', 2, 'slack', 'pending', '{}')""")
    env = {"HARVEST_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hook"}
    with serving(home, env, sources) as base:
        status, body = _health(base)
        text = requests.get(f"{base}/metrics", timeout=30).text
    assert status == 200 and body["status"] == "degraded"
    check = body["checks"]["alerts"]
    assert not check["ok"] and "slack: 1" in check["detail"]
    assert "127.0.0.1:9/hook" not in json.dumps(body)  # the webhook URL is a secret
    assert 'harvest_notifications_failed{channel="slack"} 1.0' in text
    assert 'harvest_notifications_pending{channel="slack"} 1.0' in text
    # Slack taken out of the configuration: no longer "degraded" or a backlog for good;
    # the message still waiting is named.
    with serving(home, {"HARVEST_SLACK_WEBHOOK_URL": ""}, sources) as base:
        status, body = _health(base)
        text = requests.get(f"{base}/metrics", timeout=30).text
    check = body["checks"]["alerts"]
    assert check["ok"] and check["unconfigured"] == {"slack": 1}, check
    assert "alerts wait for channels no longer configured (1 for slack)" in check["detail"]
    assert 'channel="slack"' not in text


def test_nodes_that_never_answer_leave_metrics_and_health_answering(
    db: psycopg.Connection[Any], home: Path
) -> None:
    # Two nodes that accept connections and never answer held /metrics 10 s each, past
    # Prometheus's 10 s scrape timeout: the exporter looked down, and no node alert fired.
    with socket.socket() as one, socket.socket() as two:
        for hung in (one, two):
            hung.bind(("127.0.0.1", 0))
            hung.listen(8)
        urls = ",".join(f"http://127.0.0.1:{s.getsockname()[1]}" for s in (one, two))
        with serving(home, env={"HARVEST_SCRAPYD_URLS": urls, "SCRAPYD_USERNAME": "ops",
                                "SCRAPYD_PASSWORD": "x"}) as base:
            text = requests.get(f"{base}/metrics", timeout=9).text  # inside a scrape's 10 s
            status, body = _health(base)
            # A flood of /health or /metrics (open, not rate limited) held every worker
            # thread while the nodes were probed: a read sent meanwhile waited behind them.
            finished: list[str] = []
            with ThreadPoolExecutor(61) as pool:
                floods = [pool.submit(lambda path=path: (
                    requests.get(f"{base}/{path}", timeout=60), finished.append(path)))
                    for path in ("health",) * 15 + ("metrics",) * 45]
                time.sleep(0.5)
                read = pool.submit(lambda: (requests.get(f"{base}/runs", timeout=60),
                                            finished.append("read")))
                read.result()
                for flood in floods:
                    flood.result()
            assert finished[0] == "read", finished  # the probes take 3 s; the read did not wait
            # Load balancers and uptime monitors probe with HEAD: it was 405, "down".
            for path in ("health", "metrics"):
                head = requests.head(f"{base}/{path}", timeout=9)
                assert head.status_code == 200 and head.content == b"", (path, head.status_code)
    for url in urls.split(","):
        assert f'harvest_scrapyd_node_up{{node="{url}"}} 0.0' in text
    assert status == 200 and body["status"] == "degraded"
    assert "2 of 2 nodes down" in body["checks"]["scrapyd"]["detail"]


def test_every_connection_busy_is_a_busy_server_not_a_database_down(
    db: psycopg.Connection[Any], pg_url: str, home: Path
) -> None:
    # Readers queued behind the pool's 8 connections got "the database is unavailable"
    # after 5 s while /health said healthy: operators went looking for an outage.
    with serving(home) as base, psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE signals IN ACCESS EXCLUSIVE MODE")  # reads now wait
        with ThreadPoolExecutor(9) as pool:
            waiting = [pool.submit(requests.get, f"{base}/signals", timeout=60)
                       for _ in range(8)]
            time.sleep(1)  # the 8 hold every pooled connection
            busy = requests.get(f"{base}/signals", timeout=60)
            locker.rollback()
            answered = [w.result().status_code for w in waiting]
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert busy.json() == {"detail": "the server is busy; try again shortly"}
    assert answered == [200] * 8
