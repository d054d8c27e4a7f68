"""The database dies mid-crawl: every scraped item is spooled, then lands exactly once; a
spooled batch the database refuses is set aside, not in the way of the others; items that
can be neither stored nor spooled fail the crawl loudly."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harvester.services import embedded, spool
from harvester.services.batch import Batch
from harvester.services.localsite import LocalSite
from harvester.services.runs import run_record
from tests.conftest import ROOT, harvest, write_sources
from tests.feeds import items, rss
from tests.test_store_clusters import row

FEEDS, PER_FEED = 40, 25


def wait_for_rows(url: str, deadline: float) -> int:
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM signals").fetchone()
        if row and row[0] > 0:
            return int(row[0])
        time.sleep(0.05)
    raise AssertionError("no rows were stored before the deadline")


def crawl_in_background(sources: Path, name: str, env: dict[str, str], *, per_domain: int,
                        batch: int) -> subprocess.Popen[str]:
    """``harvest crawl NAME`` as a process of its own, with small batches flushed often and
    a quick reconnect, so that an outage the test makes falls in the middle of it."""
    return subprocess.Popen(
        [sys.executable, "-m", "harvester.cli", "--sources", str(sources), "crawl", name,
         "-s", "AUTOTHROTTLE_ENABLED=False", "-s", f"CONCURRENT_REQUESTS_PER_DOMAIN={per_domain}",
         "-s", f"HARVEST_STORE_BATCH_SIZE={batch}", "-s", "HARVEST_STORE_FLUSH_SECONDS=0.2",
         "-s", "HARVEST_STORE_RECONNECT_SECONDS=1"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def test_database_stopped_mid_crawl_loses_nothing(
    private_pg: tuple[Path, str], site: LocalSite, home: Path, tmp_path: Path
) -> None:
    pg_dir, url = private_pg
    urls = []
    for i in range(FEEDS):
        (site.root / f"f{i}.xml").write_text(rss(items(f"f{i}", PER_FEED)))
        site.set_delay(f"/f{i}.xml", 0.25)  # so the crawl outlives the database
        urls.append(f"{site.url}/f{i}.xml")
    sources = write_sources(tmp_path / "s.toml", [{"name": "many", "kind": "feed", "urls": urls}])
    env = {"HARVEST_DATABASE_URL": url, "HARVEST_HOME": str(home), "COLUMNS": "200"}
    crawl = crawl_in_background(sources, "many", env, per_domain=2, batch=20)
    try:
        stored_before = wait_for_rows(url, time.monotonic() + 60)
        embedded.stop(pg_dir, mode="immediate")  # a crash, not a polite shutdown
        out, errors = crawl.communicate(timeout=180)
    finally:
        crawl.kill()
    assert crawl.returncode == 0, errors[-2000:]
    assert "spooled many:" in out
    spooled = sorted((home / "spool").glob("*.jsonl"))
    assert spooled, "batches written after the crash must be on disk"
    assert stored_before < FEEDS * PER_FEED

    embedded.start(pg_dir)
    keep = tmp_path / "copy.jsonl"
    shutil.copy(spooled[0], keep)
    replay = harvest("replay", home=home, env=env)
    assert replay.returncode == 0, replay.stderr
    assert not list((home / "spool").glob("*.jsonl"))

    # The same batch again (a replay whose file delete was lost) changes nothing.
    shutil.copy(keep, home / "spool" / spooled[0].name)
    again = harvest("replay", home=home, env=env)
    assert "1 already applied" in again.stdout

    with psycopg.connect(url) as conn:
        total, distinct, max_seen = conn.execute(
            "SELECT count(*), count(DISTINCT canonical_url), max(seen_count) FROM signals"
        ).fetchone()
        scraped, finish_reason = conn.execute(
            "SELECT scraped, finish_reason FROM crawl_runs").fetchone()
    assert scraped == FEEDS * PER_FEED
    assert finish_reason == "finished"
    assert total == distinct == scraped
    assert max_seen == 1


def test_a_database_back_before_the_crawl_ends_takes_the_spool_at_its_close(
    private_pg: tuple[Path, str], site: LocalSite, home: Path, tmp_path: Path
) -> None:
    # The close replayed the run's spooled batches after writing the run record, and the
    # summary still said "N items wait in the spool; `harvest replay` stores them".
    pg_dir, url = private_pg
    embedded.stop(pg_dir, mode="immediate")
    urls = []
    for i in range(6):
        (site.root / f"b{i}.xml").write_text(rss(items(f"b{i}", 5)))
        site.set_delay(f"/b{i}.xml", 8.0 if i == 5 else 1.0)  # the last outlives the outage
        urls.append(f"{site.url}/b{i}.xml")
    sources = write_sources(tmp_path / "s.toml", [{"name": "back", "kind": "feed",
                                                   "urls": urls}])
    env = {"HARVEST_DATABASE_URL": url, "HARVEST_HOME": str(home), "COLUMNS": "200"}
    crawl = crawl_in_background(sources, "back", env, per_domain=1, batch=5)
    try:
        deadline = time.monotonic() + 60
        while not list((home / "spool").glob("*.jsonl")):  # spooling while it is away
            assert time.monotonic() < deadline and crawl.poll() is None, "nothing spooled"
            time.sleep(0.1)
        embedded.start(pg_dir)
        out, errors = crawl.communicate(timeout=180)
    finally:
        crawl.kill()
    assert crawl.returncode == 0, errors[-2000:]
    out = " ".join(out.split())
    assert "were stored when the crawl ended" in out, out
    assert "harvest replay" not in out
    assert not list((home / "spool").iterdir())
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM signals").fetchone() == (30,)
        stats = conn.execute("SELECT stats FROM crawl_runs").fetchone()[0]
    assert stats["harvest/store/replayed"] >= 1  # the run record came after the replay
    assert stats["harvest/source/back/spool_stored"] == stats["harvest/source/back/spooled"]


def test_crawl_with_the_database_down_spools_everything_for_replay(
    site: LocalSite, db: psycopg.Connection[Any], pg_url: str, home: Path, tmp_path: Path
) -> None:
    (site.root / "f.xml").write_text(rss([*items("down", 3), {"title": "no link"}]))
    sources = write_sources(tmp_path / "s.toml", [{"name": "d", "kind": "feed",
                                                   "urls": [f"{site.url}/f.xml"]}])
    nowhere = {"HARVEST_DATABASE_URL": "postgresql://harvest@127.0.0.1:9/nowhere"}
    result = harvest("--sources", str(sources), "crawl", "d", home=home, env=nowhere)
    assert result.returncode == 0, result.stderr
    assert "the database is unreachable" in result.stderr
    assert "spooled d: 3 items wait" in result.stdout
    # It said so only after a forced stop; the log said "Spooled 0 signals and 0 rejections".
    assert "spooled d: the run's record is in the spool" in " ".join(result.stdout.split())
    assert count_rows(db) == 0

    replay = harvest("replay", home=home, env={"HARVEST_DATABASE_URL": pg_url})
    assert replay.returncode == 0, replay.stderr
    assert count_rows(db) == 3
    assert db.execute("SELECT count(*) FROM rejects").fetchone() == (1,)
    assert db.execute("SELECT sources, scraped FROM crawl_runs").fetchall() == [(["d"], 3)]


def test_a_spool_directory_of_its_own_is_named_in_the_replay_command(
    site: LocalSite, db: psycopg.Connection[Any], pg_url: str, home: Path, tmp_path: Path
) -> None:
    # HARVEST_STORE_SPOOL_DIR is a crawl setting: `harvest replay` only finds those batches
    # when told where they are, and the crawl says how.
    (site.root / "f.xml").write_text(rss(items("own", 2)))
    sources = write_sources(tmp_path / "s.toml", [{"name": "o", "kind": "feed",
                                                   "urls": [f"{site.url}/f.xml"]}])
    own = tmp_path / "my spool"
    nowhere = {"HARVEST_DATABASE_URL": "postgresql://harvest@127.0.0.1:9/nowhere"}
    result = harvest("--sources", str(sources), "crawl", "o", "-s",
                     f"HARVEST_STORE_SPOOL_DIR={own}", home=home, env=nowhere)
    assert result.returncode == 0, result.stderr
    command = f"harvest replay --dir '{own}'"
    assert f"until `{command}`" in result.stderr
    assert f"`{command}` stores them" in " ".join(result.stdout.split())
    assert list(own.glob("*.jsonl")) and not (home / "spool").exists()

    back = {"HARVEST_DATABASE_URL": pg_url}
    assert "nothing to replay" in harvest("replay", home=home, env=back).stdout
    replay = harvest("replay", "--dir", str(own), home=home, env=back)
    assert replay.returncode == 0, replay.stderr
    assert count_rows(db) == 2
    assert not list(own.glob("*.jsonl"))


def test_items_neither_stored_nor_spooled_fail_the_crawl_loudly(
    site: LocalSite, home: Path, tmp_path: Path
) -> None:
    # The database is down and the spool cannot be written (here: its path is a file):
    # the one way items are lost. They are counted, said in one line, and the crawl fails.
    (site.root / "f.xml").write_text(rss([*items("gone", 3), {"title": "no link"}]))
    sources = write_sources(tmp_path / "s.toml", [{"name": "g", "kind": "feed",
                                                   "urls": [f"{site.url}/f.xml"]}])
    blocked = tmp_path / "spool-is-a-file"
    blocked.write_text("")
    result = harvest("--sources", str(sources), "crawl", "g",
                     "-s", f"HARVEST_STORE_SPOOL_DIR={blocked}", home=home,
                     env={"HARVEST_DATABASE_URL": "postgresql://harvest@127.0.0.1:9/nowhere"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"items go to {blocked}" in result.stderr
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "lost g: 4 items were neither stored nor spooled: cannot write the spool in" in out
    assert "HARVEST_STORE_SPOOL_DIR" in out
    log = "".join(p.read_text() for p in (home / "logs").glob("*.log"))
    assert "3 signals and 1 rejections are lost: cannot write the spool" in log
    assert "Traceback" not in log  # one clear line, not a close failure


def test_a_refused_spool_file_is_set_aside_and_the_others_replay(
    db: psycopg.Connection[Any], pg_url: str, home: Path
) -> None:
    spool_dir = home / "spool"
    first = spool.write(spool_dir, Batch(signals=[row("before-1"), row("before-2")]))
    # A row PostgreSQL refuses (no key: NOT NULL), and one our own code cannot take.
    null_key = spool.write(spool_dir, Batch(signals=[{**row("x"), "key": None}]))
    no_key = Batch(signals=[row("y")])
    del no_key.signals[0]["key"]
    no_key_file = spool.write(spool_dir, no_key)
    last = spool.write(spool_dir, Batch(signals=[row("after-1")]))
    env = {"HARVEST_DATABASE_URL": pg_url}

    result = harvest("replay", home=home, env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    stored = {k for (k,) in db.execute("SELECT key FROM signals")}
    assert stored == {"before-1", "before-2", "after-1"}  # the last one was not held back
    err = " ".join(result.stderr.split())
    assert f"refused {null_key.name}: NotNullViolation" in err
    assert f"refused {no_key_file.name}: KeyError" in err
    assert "2 spool files were refused and renamed .refused" in err
    assert sorted(p.name for p in spool_dir.iterdir()) == sorted(
        [null_key.with_suffix(".refused").name, no_key_file.with_suffix(".refused").name])
    assert not first.exists() and not last.exists()
    verify = harvest("verify", home=home, env=env)
    assert "2 spool files the database refused (*.refused)" in " ".join(verify.stdout.split())

    # The cause fixed (here: the file rewritten with a key), the batch goes in.
    fixed = Batch(signals=[row("x")], batch_id=spool.read(
        null_key.with_suffix(".refused")).batch_id)
    null_key.with_suffix(".refused").unlink()
    spool.write(spool_dir, fixed)
    no_key_file.with_suffix(".refused").unlink()
    again = harvest("replay", "--retry-refused", home=home, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert db.execute("SELECT count(*) FROM signals WHERE key = 'x'").fetchone() == (1,)
    assert list(spool_dir.iterdir()) == []


def count_rows(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM signals").fetchone()
    return int(row[0]) if row else 0


def test_a_spool_file_of_another_shape_is_set_aside_and_the_others_replay(
    db: psycopg.Connection[Any], pg_url: str, home: Path
) -> None:
    # Valid JSON of another shape (a hand edit) crashed replay with a traceback and held
    # back every batch behind it; a batch id that is no UUID crashed `harvest verify`.
    spool_dir = home / "spool"
    first = spool.write(spool_dir, Batch(signals=[row("before")]))
    listed = spool_dir / "20000101T000000000000-listed.jsonl"
    listed.write_text(f'{{"format": 2, "batch_id": "{first.stem[22:]}", "records": 1}}\n'
                      '["signal", {}]\n')
    hand = spool_dir / "20000101T000000000001-hand.jsonl"
    hand.write_text('{"format": 2, "batch_id": "hand-made", "records": 0}\n')
    env = {"HARVEST_DATABASE_URL": pg_url}

    verify = harvest("verify", home=home, env=env)
    assert "Traceback" not in verify.stderr, verify.stderr
    assert "3 spooled batches wait" in " ".join(verify.stdout.split()), verify.stdout

    result = harvest("replay", home=home, env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert db.execute("SELECT key FROM signals").fetchall() == [("before",)]
    err = " ".join(result.stderr.split())
    assert "(line 2: not a signal, reject or run record)" in err
    assert "(line 1: the header's batch_id 'hand-made' is no UUID)" in err
    assert "2 spool files were unreadable and renamed .bad" in err
    assert "rename it back to .jsonl, then run `harvest replay`" in err
    assert sorted(p.name for p in spool_dir.iterdir()) == [
        listed.with_suffix(".bad").name, hand.with_suffix(".bad").name]

    # Nothing pending, but two files wait for the operator: not a clean spool.
    again = harvest("replay", home=home, env=env)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "nothing to replay" in again.stdout
    assert "0 refused, 2 unreadable files" in " ".join(again.stderr.split())


def test_spool_files_a_killed_crawl_left_half_written_are_replayed_or_reported(
    db: psycopg.Connection[Any], pg_url: str, home: Path
) -> None:
    # A crawl killed outright while spooling leaves its batch as .tmp: replay did not look
    # at it (a whole batch, killed between fsync and rename, was never stored) and nothing
    # said that a cut one's items were lost.
    spool_dir = home / "spool"
    whole = spool.write(spool_dir, Batch(signals=[row("whole")]))
    whole = whole.rename(whole.with_suffix(".tmp"))
    cut = spool.write(spool_dir, Batch(signals=[row("cut1"), row("cut2")]))
    cut.with_suffix(".tmp").write_text(cut.read_text().splitlines(keepends=True)[0])
    cut.unlink()
    cut = cut.with_suffix(".tmp")
    old = time.time() - spool.STALE_TMP_S - 5
    for path in (whole, cut):
        os.utime(path, (old, old))
    writing = spool_dir / "20991231T000000000000-in-progress.tmp"  # another crawl's, now
    writing.write_text("{")
    env = {"HARVEST_DATABASE_URL": pg_url}

    verify = harvest("verify", home=home, env=env)
    assert "2 spool files (*.tmp) in" in " ".join(verify.stdout.split()), verify.stdout
    result = harvest("replay", home=home, env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert db.execute("SELECT key FROM signals").fetchall() == [("whole",)]
    assert "1 spool files were unreadable and renamed .bad" in " ".join(result.stderr.split())
    assert sorted(p.name for p in spool_dir.iterdir()) == sorted(
        [cut.with_suffix(".bad").name, writing.name])


def test_a_full_disk_under_harvest_home_still_stores_the_crawl(
    site: LocalSite, db: psycopg.Connection[Any], pg_url: str, tmp_path: Path
) -> None:
    # Logs and metrics live there: the crawl died on "No space left on device" as each
    # crawler set up its log (a 145-line traceback), and with -v prometheus-client's
    # mmapped files killed it with SIGBUS. The database is elsewhere: the items belong in it.
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(full)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()})")
    try:
        home = full / "home"
        home.mkdir()
        with open(full / "fill", "wb") as fill, contextlib.suppress(OSError):
            while True:  # every byte taken
                fill.write(b"\0" * 65536)
                fill.flush()
        (site.root / "f.xml").write_text(rss(items("full", 5)))
        sources = write_sources(tmp_path / "s.toml", [{"name": "full", "kind": "feed",
                                                       "urls": [f"{site.url}/f.xml"]}])
        for extra in ([], ["-v"]):
            db.execute("TRUNCATE signals, sources_state CASCADE")  # no 304 the second time
            result = harvest("--sources", str(sources), "crawl", "full", *extra, home=home,
                             env={"HARVEST_DATABASE_URL": pg_url})
            assert result.returncode == 0, (extra, result.stdout + result.stderr)
            assert "Logging error" not in result.stderr and "Traceback" not in result.stderr
            assert db.execute("SELECT count(*) FROM signals").fetchone() == (5,), result.stdout
        assert "has no room for the crawl's log" in harvest(
            "--sources", str(sources), "crawl", "full", home=home,
            env={"HARVEST_DATABASE_URL": pg_url}).stderr
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_a_run_that_lost_items_keeps_no_validators_or_resume_point() -> None:
    # It kept the feed's ETag (and an API source's since_id): the next run got a 304 and
    # the lost items were never fetched again, while every status looked healthy.
    stats = {"harvest/source/f/fetched": 1, "harvest/source/f/entries": 40,
             "harvest/source/f/new": 30, "harvest/source/f/lost": 10}
    url = "http://127.0.0.1:9/f.xml"
    record = run_record(run_id="6f1a1f4c-8c1a-4d3e-9a55-333333333333", spider="feed",
                        sources=["f"], job_id=None, started_at=datetime.now(UTC),
                        reason="finished", stats=stats,
                        validators={"f": {url: {"etag": '"v1"'}}},
                        cursors={"f": {"since_id": "99"}})
    state = record["source_states"]["f"]
    assert state["validators"] == {url: {}}  # forgotten, not only left out (merged)
    assert state["cursor"] == {}
    # Without the loss both are kept.
    del stats["harvest/source/f/lost"]
    started = datetime.now(UTC)
    kept = run_record(run_id="6f1a1f4c-8c1a-4d3e-9a55-333333333334", spider="feed",
                      sources=["f"], job_id=None, started_at=started,
                      reason="finished", stats=stats, validators={"f": {url: {"etag": '"v1"'}}},
                      cursors={"f": {"since_id": "99"}})["source_states"]["f"]
    assert kept["validators"] == {url: {"etag": '"v1"'}}
    assert kept["cursor"] == {"since_id": "99", "since": started.isoformat()}
    # A run stopped early (Ctrl-C, a CLOSESPIDER_ limit) keeps no resume point: what it
    # never asked for would be skipped for good.
    for reason in ("shutdown", "closespider_itemcount"):
        stopped = run_record(run_id="6f1a1f4c-8c1a-4d3e-9a55-333333333335", spider="feed",
                             sources=["f"], job_id=None, started_at=started, reason=reason,
                             stats=stats, validators={}, cursors={"f": {"since_id": "99"}})
        assert stopped["source_states"]["f"]["cursor"] == {}, reason
