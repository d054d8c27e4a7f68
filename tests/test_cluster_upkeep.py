"""Corroboration follows signals that leave or come back outside the store: retention,
archives and restores recompute the sources of the clusters they touch, so a story is not
scored as carried by a source whose copies were all deleted."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from harvester.services.ops import retention
from harvester.services.scoring import corroboration_factor
from tests.conftest import ROOT, harvest, harvest_env, wait_for
from tests.test_store_clusters import STORY, SYNDICATED, row, store

BASE = 10.0


def signal(key: str, text: str, source: str) -> dict[str, Any]:
    return row(key, text, source=source, score=BASE, score_breakdown={"base": BASE})


def sources(db: psycopg.Connection[Any]) -> list[list[str]]:
    return [s for (s,) in db.execute("SELECT sources FROM cluster_sources ORDER BY 1")]


def score(db: psycopg.Connection[Any], key: str) -> tuple[float, Any]:
    found = db.execute("SELECT score, score_breakdown -> 'corroboration' -> 'factor' "
                       "FROM signals WHERE key = %s", (key,)).fetchone()
    assert found is not None
    return found[0], float(found[1]) if found[1] is not None else None


def clusters(db: psycopg.Connection[Any]) -> int:
    found = db.execute("SELECT count(DISTINCT coalesce(cluster_id, id)) FROM signals").fetchone()
    return found[0] if found else 0


def age(db: psycopg.Connection[Any], key: str, days: int) -> None:
    db.execute("UPDATE signals SET last_seen = last_seen - make_interval(days => %s) "
               "WHERE key = %s", (days, key))


def two_sources(db: psycopg.Connection[Any], pg_url: str) -> float:
    store(pg_url, [signal("from-a", STORY, "a")], [signal("from-b", SYNDICATED, "b")])
    assert clusters(db) == 1 and sources(db) == [["a", "b"]]
    two = corroboration_factor(2)
    assert two > 1 and score(db, "from-b") == (round(BASE * two, 2), two)
    return two


def test_retention_drops_a_source_whose_copies_are_gone(db: psycopg.Connection[Any],
                                                        pg_url: str, home: Any) -> None:
    two = two_sources(db, pg_url)
    age(db, "from-a", 60)
    done = harvest("retain", "--keep-age", "30d", "--force", home=home)
    assert done.returncode == 0, done.stderr
    assert "1 signals rescored: their clusters lost a source" in done.stdout
    assert sources(db) == []  # one source left: no longer corroborated
    assert score(db, "from-b") == (BASE, 1.0)
    # A third outlet joins: two sources (b, c), not three counting the deleted one.
    store(pg_url, [signal("from-c", STORY, "c")])  # the text the deleted copy had
    assert clusters(db) == 1 and sources(db) == [["b", "c"]]
    assert score(db, "from-c") == score(db, "from-b") == (round(BASE * two, 2), two)


def test_retention_counts_each_signal_left_rescored_once(db: psycopg.Connection[Any],
                                                         pg_url: str) -> None:
    # The report summed every batch's rescoring: rows rescored again by a later batch, and
    # rows a later batch deleted, so "6 signals rescored" with one signal left.
    store(pg_url, [signal(f"from-{s}", STORY if s in "ac" else SYNDICATED, s)
                   for s in "abcd"])
    assert clusters(db) == 1 and sources(db) == [["a", "b", "c", "d"]]
    for key in ("from-a", "from-b", "from-c"):
        age(db, key, 60)
    cutoff = datetime.now(UTC) - timedelta(days=30)
    assert retention.choose(db, cutoff) == 3
    report = retention.delete_chosen(db, cutoff, batch=1)
    assert (report.deleted, report.batches, report.rescored) == (3, 3, 1)
    assert score(db, "from-d") == (BASE, 1.0)


def test_one_archive_or_retain_at_a_time(db: psycopg.Connection[Any], pg_url: str,
                                         home: Any) -> None:
    # Two at once each exported the same rows; the second reported them "seen again
    # meanwhile, kept" and left an archive repeating the first's.
    two_sources(db, pg_url)
    age(db, "from-a", 60)
    with psycopg.connect(pg_url, autocommit=True) as other:  # an archive under way
        other.execute("SELECT pg_advisory_lock(hashtext('harvest archive/retain'))")
        for args in (("archive", "--older-than", "45d"), ("retain", "--keep-age", "30d",
                                                          "--force")):
            done = harvest(*args, home=home)
            assert done.returncode == 2, done.stdout + done.stderr
            assert done.stderr.strip() == (
                "error: another `harvest archive` or `harvest retain` is deleting signals "
                "from this database; run this one once it has finished")
        assert not list((home / "archives").glob("*.csv"))
    assert harvest("archive", "--older-than", "45d", home=home).returncode == 0
    assert len(list((home / "archives").glob("*.csv"))) == 1


def test_archive_and_restore_take_their_sources_along(db: psycopg.Connection[Any],
                                                      pg_url: str, home: Any) -> None:
    two = two_sources(db, pg_url)
    before = db.execute("SELECT * FROM signals WHERE key = 'from-a'").fetchone()
    age(db, "from-a", 60)
    assert harvest("archive", "--older-than", "45d", home=home).returncode == 0
    assert sources(db) == [] and score(db, "from-b") == (BASE, 1.0)
    archived = next((home / "archives").glob("*.csv"))
    done = harvest("archive", "restore", str(archived), home=home)
    assert done.returncode == 0, done.stderr
    assert sources(db) == [["a", "b"]]
    assert score(db, "from-b") == (round(BASE * two, 2), two)
    restored = db.execute("SELECT * FROM signals WHERE key = 'from-a'").fetchone()
    assert restored is not None and before is not None
    assert restored[0] == before[0] and score(db, "from-a") == (round(BASE * two, 2), two)


def test_a_retention_killed_between_batches_leaves_no_stale_corroboration(
        db: psycopg.Connection[Any], pg_url: str, home: Any) -> None:
    # The touched clusters were rebuilt once, after the last batch: a run killed before
    # that left the cluster naming a deleted source and its members with the bonus, and a
    # second run found nothing to delete, so nothing repaired it.
    two_sources(db, pg_url)
    filler = [signal(f"filler-{i}", f"unrelated note {i} on item {i * 7919}", "z")
              for i in range(1100)]  # the first batch of 1,000 takes from-a; the second waits
    store(pg_url, filler)
    db.execute("UPDATE signals SET last_seen = last_seen - interval '60 days' "
               "WHERE key = 'from-a' OR source = 'z'")
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("SELECT 1 FROM signals WHERE key = 'filler-1099' FOR UPDATE")
        retain = subprocess.Popen(
            [sys.executable, "-m", "harvester.cli", "retain", "--keep-age", "30d", "--force"],
            cwd=ROOT, env=harvest_env(home, {"HARVEST_DATABASE_URL": pg_url}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                "query LIKE '%ops_doomed%'").fetchone(), "the second batch to wait")
            retain.kill()
            retain.wait(timeout=30)
        finally:
            retain.kill()
        blocker.rollback()
    assert db.execute("SELECT count(*) FROM signals WHERE key = 'from-a'").fetchone() == (0,)
    assert sources(db) == []  # the first batch's cluster, rebuilt with that batch
    assert score(db, "from-b") == (BASE, 1.0)
