"""Source health across runs: failures counted, a failing source disabled and reported,
re-enabled by the operator; whole kinds switched off from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.apiserver import ApiServer, Reply
from tests.conftest import harvest, write_sources
from tests.feeds import items, rss

FAST = ("-s", "AUTOTHROTTLE_ENABLED=False", "-s", "RETRY_TIMES=0")


def _state(db: psycopg.Connection[Any], name: str) -> tuple[Any, ...] | None:
    return db.execute("SELECT consecutive_failures, disabled, last_error, last_attempt "
                      "FROM sources_state WHERE source = %s", (name,)).fetchone()


def test_failing_source_is_disabled_reported_and_enabled_again(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    healthy = {"ok": False}

    def feed(request: Any) -> Reply:
        if healthy["ok"]:
            return Reply.text(rss(items("h", 2)), content_type="application/rss+xml")
        return Reply.text("broken", status=500)

    env = {"HARVEST_DISABLE_AFTER": "2"}
    with ApiServer() as api:
        api.add("/feed.xml", feed)
        sources = write_sources(tmp_path / "s.toml", [
            {"name": "flaky", "kind": "feed", "urls": [f"{api.url}/feed.xml"]}])
        base = ("--sources", str(sources))

        for run in (1, 2):
            result = harvest(*base, "crawl", "flaky", *FAST, home=home, env=env)
            assert result.returncode == 1, result.stdout
            failures, disabled, last_error, _ = _state(db, "flaky") or ()
            assert failures == run and disabled == (run == 2)
            assert "HTTP 500" in last_error

        listing = harvest(*base, "sources", home=home, env=env)
        assert "disabled" in listing.stdout
        assert "harvest sources enable flaky" in listing.stdout

        hits_before = len(api.hits("/feed.xml"))
        attempted_before = (_state(db, "flaky") or ())[3]
        skipped = harvest(*base, "crawl", "flaky", *FAST, home=home, env=env)
        # Exit 1: not reached (every source of five offline `make run`s ended here, exit 0).
        assert skipped.returncode == 1, skipped.stdout
        assert "skipped" in skipped.stdout and "harvest sources enable flaky" in skipped.stdout
        assert len(api.hits("/feed.xml")) == hits_before, "a disabled source is not fetched"
        assert (_state(db, "flaky") or ())[3] == attempted_before, "a skip is not an attempt"

        enabled = harvest(*base, "sources", "enable", "flaky", home=home, env=env)
        assert enabled.returncode == 0 and "enabled again" in enabled.stdout
        healthy["ok"] = True
        result = harvest(*base, "crawl", "flaky", *FAST, home=home, env=env)
        assert result.returncode == 0, result.stdout
        assert (_state(db, "flaky") or ())[:2] == (0, False)
    row = db.execute("SELECT count(*) FROM signals WHERE source = 'flaky'").fetchone()
    assert row == (2,)


def test_enable_unknown_source_is_one_clear_error(home: Path, tmp_path: Path) -> None:
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "a", "kind": "feed", "urls": ["http://127.0.0.1:9/feed.xml"]}])
    result = harvest("--sources", str(sources), "sources", "enable", "nope", home=home)
    assert result.returncode == 2
    assert "unknown source 'nope'" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def test_kind_switched_off_by_environment(db: psycopg.Connection[Any], home: Path,
                                          tmp_path: Path) -> None:
    with ApiServer() as api:
        api.add("/feed.xml", lambda r: Reply.text(rss(items("k", 2)),
                                                   content_type="application/rss+xml"))
        sources = write_sources(tmp_path / "s.toml", [
            {"name": "switched", "kind": "feed", "urls": [f"{api.url}/feed.xml"],
             "cron": "0 6 * * 1"}])
        env = {"HARVEST_FEED_ENABLED": "false", "COLUMNS": "250"}
        result = harvest("--sources", str(sources), "crawl", "--all", *FAST, home=home, env=env)
        listing = harvest("--sources", str(sources), "sources", home=home, env=env)
        assert api.hits("/feed.xml") == []
    assert result.returncode == 0, result.stdout
    assert "HARVEST_FEED_ENABLED=false" in result.stdout
    assert "off (HARVEST_FEED_ENABLED)" in listing.stdout
    assert "cron 0 6 * * 1" in listing.stdout  # it showed the unused interval, 1h
    assert _state(db, "switched") is None
