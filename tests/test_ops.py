"""Operations on the data, run as an operator runs them (``harvest …`` in a subprocess)
against a real PostgreSQL: snapshots, prune, retention, archives, backups, verify, stats."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import signal as signal_module
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harvester.migrations import HEAD
from harvester.services.batch import Batch
from harvester.services.ops.files import sha256_of
from harvester.services.store import write_batch
from harvester.services.urls import canonical_url, url_key
from tests.conftest import ROOT, harvest, harvest_env, wait_for

RUN_ID = "6f1a1f4c-8c1a-4d3e-9a55-222222222222"
def signal(n: int, source: str = "s1") -> dict[str, Any]:
    """A signal with the awkward values exports get wrong: quotes, commas, newlines,
    backslashes, non-ASCII, NULLs, arrays, nested jsonb, fractional reals."""
    now = datetime.now(UTC)
    return {
        "key": f"key-{n}", "source": source, "kind": "feed",
        "url": f"https://example.org/{n}", "canonical_url": f"https://example.org/{n}",
        "title": f'Ünïcode "{n}", comma\nnew line \\ back',
        "text": 'body,\t"quoted"' if n % 2 else None,
        "fetched_at": now,
        "published_at": now - timedelta(hours=n) if n % 3 else None,
        "tags": ["a,b", 'q"x', "{brace}"] if n % 2 else [],
        "engagement": {"points": n, "nested": {"list": [1, None, "x"]}},
        "score": n / 7, "score_breakdown": {"topics": {"t": n / 3}},
        "run_id": RUN_ID,
    }


def store(url: str, rows: list[dict[str, Any]]) -> None:
    """Through the real write path (COPY + upsert), in batches as a crawl would."""
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for i in range(0, len(rows), 500):
                await write_batch(conn, Batch(signals=rows[i:i + 500]))

    asyncio.run(go())


def age(conn: psycopg.Connection[Any], keys: list[str], days: int) -> None:
    conn.execute("UPDATE signals SET first_seen = first_seen - make_interval(days => %s), "
                 "last_seen = last_seen - make_interval(days => %s) WHERE key = ANY(%s)",
                 (days, days, keys))


def cluster(conn: psycopg.Connection[Any], keys: list[str]) -> None:
    """What the clustering step does: members point at the first signal's id."""
    conn.execute("UPDATE signals SET cluster_id = (SELECT min(id) FROM signals WHERE key = "
                 "ANY(%s)), simhash = -123456789012345 WHERE key = ANY(%s) AND id > "
                 "(SELECT min(id) FROM signals WHERE key = ANY(%s))", (keys, keys, keys))


def table(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM signals ORDER BY id").fetchall()


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def test_snapshot_prune_restore_round_trip(db: psycopg.Connection[Any], pg_url: str,
                                           home: Path) -> None:
    store(pg_url, [signal(n) for n in range(40)])
    cluster(db, ["key-1", "key-2", "key-3"])
    before = table(db)
    for args in (["snapshot"], ["snapshot"], ["snapshot", "--gzip"]):
        done = harvest(*args, home=home)
        assert done.returncode == 0, done.stderr
        assert "snapshot of 40 signals" in done.stdout
    shots = home / "snapshots"
    assert len(files_in(shots)) == 6  # three data files, three manifests
    # Every signal, readable by every local account (0644) until harvest set its umask.
    assert all(p.stat().st_mode & 0o007 == 0 for p in [shots, *shots.iterdir()])
    newest = sorted(shots.glob("*.ndjson.gz"))[0]
    manifest = json.loads((shots / (newest.name.split(".")[0] + ".manifest.json")).read_text())
    assert (manifest["rows"], manifest["schema_revision"]) == (40, HEAD)
    assert "id" in manifest["columns"] and "cluster_id" in manifest["columns"]

    dry = harvest("prune", "--keep", "1", home=home)
    assert dry.returncode == 0 and "2 snapshots would be deleted" in dry.stdout
    assert len(files_in(shots)) == 6
    done = harvest("prune", "--keep", "1", "--force", home=home)
    assert done.returncode == 0, done.stderr
    assert files_in(shots) == sorted([newest.name, newest.name.split(".")[0]
                                      + ".manifest.json"])
    assert len(table(db)) == 40  # prune removes snapshot files, never signals

    db.execute("DELETE FROM signals WHERE key <> 'key-5'")
    done = harvest("snapshot", "restore", str(newest), home=home)
    assert done.returncode == 0, done.stderr
    assert "restored 39 of 40 signals" in done.stdout
    assert table(db) == before
    again = harvest("snapshot", "restore", str(newest), home=home)
    assert "restored 0 of 40 signals" in again.stdout
    assert table(db) == before
    store(pg_url, [signal(1000)])  # the id sequence is past every restored id
    assert len(table(db)) == 41


def test_prune_never_counts_an_artifact_it_could_not_restore(
        db: psycopg.Connection[Any], pg_url: str, home: Path) -> None:
    # The newest dump moved off the host (or cut short) still counted as one of the N kept:
    # `prune --keep 1 --force` deleted the last good one, and restore had nothing left.
    store(pg_url, [signal(n) for n in range(3)])
    for _ in range(3):
        assert harvest("snapshot", home=home).returncode == 0
    shots = home / "snapshots"
    oldest, middle, newest = sorted(shots.glob("*.ndjson"))
    newest.unlink()
    with middle.open("r+b") as fh:
        fh.truncate(middle.stat().st_size - 1)
    done = harvest("prune", "--keep", "1", "--force", home=home)
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert f"{newest.name!r} is missing" in out and "not the" in out, out
    assert "nothing to prune: 1 snapshots" in out, out
    assert oldest.exists() and middle.exists()
    # A manifest naming no file next to it: a ValueError traceback (in a dry run too).
    for name in ("", "sub/x.ndjson"):
        manifest = shots / (middle.name.split(".")[0] + ".manifest.json")
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "file": name}))
        done = harvest("prune", "--keep", "1", home=home)
        assert done.returncode == 0 and "names no data file next to it" in done.stdout, \
            done.stdout + done.stderr
    db.execute("DELETE FROM signals")
    assert harvest("snapshot", "restore", str(oldest), home=home).returncode == 0
    assert len(table(db)) == 3


def test_equal_gzip_snapshots_have_equal_checksums(db: psycopg.Connection[Any], pg_url: str,
                                                   home: Path) -> None:
    # The gzip header held the file name, which carries the time: the checksums differed.
    store(pg_url, [signal(n) for n in range(3)])
    for _ in range(2):
        assert harvest("snapshot", "--gzip", home=home).returncode == 0
    manifests = sorted((home / "snapshots").glob("*.manifest.json"))
    sums = {json.loads(m.read_text())["sha256"] for m in manifests}
    assert len(manifests) == 2 and len(sums) == 1


def test_tampered_snapshot_is_refused(db: psycopg.Connection[Any], pg_url: str,
                                      home: Path) -> None:
    store(pg_url, [signal(n) for n in range(5)])
    assert harvest("snapshot", home=home).returncode == 0
    data = next((home / "snapshots").glob("*.ndjson"))
    data.write_text(data.read_text().replace("example.org", "example.net", 1))
    db.execute("DELETE FROM signals")
    done = harvest("snapshot", "restore", str(data), home=home)
    assert done.returncode == 2
    assert "does not match the checksum in its manifest" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert table(db) == []
    # A manifest edited by hand: a ValueError or KeyError traceback, not one sentence.
    manifest_file = next((home / "snapshots").glob("*.manifest.json"))
    manifest = {**json.loads(manifest_file.read_text()), "sha256": sha256_of(data)}
    for changed, said in (({"file": ""}, "names no data file next to it ('')"),
                          ({"file": "x/y.ndjson"}, "names no data file next to it"),
                          ({"columns": None}, "has no columns")):
        manifest_file.write_text(json.dumps({**manifest, **changed}))
        done = harvest("snapshot", "restore", str(manifest_file), home=home)
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_archive_restore_round_trip_keeps_rows_identical(
        db: psycopg.Connection[Any], pg_url: str, home: Path) -> None:
    store(pg_url, [signal(n) for n in range(2600)])
    old = [f"key-{n}" for n in range(2100)]
    age(db, old, 60)
    age(db, ["key-2500"], 50)  # first seen long ago but seen lately: a feed still lists it
    db.execute("UPDATE signals SET last_seen = now() WHERE key = 'key-2500'")
    cluster(db, ["key-10", "key-11", "key-2550"])  # a cluster across the cut
    before = table(db)

    done = harvest("archive", "--older-than", "45d", "--gzip", home=home)
    assert done.returncode == 0, done.stderr
    assert "archived 2100 signals" in done.stdout
    assert "deleted 2100 signals" in done.stdout and "3 batches" in done.stdout
    left = table(db)
    assert len(left) == 500 and {r[1] for r in left} == {f"key-{n}" for n in range(2100, 2600)}
    archived = next((home / "archives").glob("*.csv.gz"))
    manifest = json.loads(next((home / "archives").glob("*.manifest.json")).read_text())
    assert manifest["rows"] == 2100 and manifest["file"] == archived.name
    # An archive in the directory is no interrupted export ("no manifest names it").
    pruned = harvest("prune", "--keep", "1", "--dir", str(home / "archives"), home=home)
    assert pruned.returncode == 0 and "left alone" not in pruned.stdout, pruned.stdout

    done = harvest("archive", "restore", str(archived), home=home)
    assert done.returncode == 0, done.stderr
    assert "restored 2100 of 2100 signals" in done.stdout
    assert table(db) == before
    assert "restored 0 of 2100" in harvest("archive", "restore", str(archived),
                                           home=home).stdout


def test_archive_restored_where_ids_are_taken_gets_new_ids(
        db: psycopg.Connection[Any], pg_url: str, home: Path) -> None:
    store(pg_url, [signal(n) for n in range(3)])
    age(db, ["key-0", "key-1", "key-2"], 60)
    cluster(db, ["key-0", "key-1"])
    assert harvest("archive", "--older-than", "45d", home=home).returncode == 0
    head_id = db.execute("SELECT min(id) FROM signals").fetchone()
    assert head_id == (None,)
    # Another database (or a hand-written row) already uses the first archived id.
    archived = next((home / "archives").glob("*.csv"))
    first_id = int(archived.read_text().splitlines()[1].split(",")[0])
    db.execute("INSERT INTO signals (id, key, source, kind, fetched_at) "
               "VALUES (%s, 'other', 'x', 'feed', now())", (first_id,))
    done = harvest("archive", "restore", str(archived), home=home)
    assert done.returncode == 0, done.stderr
    assert "1 got new ids" in done.stdout
    rows = dict(db.execute("SELECT key, coalesce(cluster_id, id) FROM signals").fetchall())
    assert rows["key-0"] != first_id and rows["key-0"] == rows["key-1"]  # cluster follows
    assert rows["other"] == first_id


def test_retain_deletes_by_last_seen_only_with_force(db: psycopg.Connection[Any], pg_url: str,
                                                     home: Path) -> None:
    store(pg_url, [signal(n, source="a" if n < 5 else "b") for n in range(10)])
    age(db, [f"key-{n}" for n in range(7)], 40)
    db.execute("UPDATE signals SET last_seen = now() WHERE key = 'key-6'")  # still listed
    dry = harvest("retain", "--keep-age", "30d", home=home)
    assert dry.returncode == 0, dry.stderr
    assert "6 signals were last seen before" in dry.stdout and "--force" in dry.stdout
    assert "a: 5" in dry.stdout and "b: 1" in dry.stdout
    assert len(table(db)) == 10
    done = harvest("retain", "--keep-age", "30d", "--force", home=home)
    assert done.returncode == 0, done.stderr
    assert "deleted 6 signals" in done.stdout
    assert sorted(r[1] for r in table(db)) == ["key-6", "key-7", "key-8", "key-9"]
    bad = harvest("retain", "--keep-age", "thirty", home=home)
    assert bad.returncode == 2 and "not an age like 30d" in bad.stderr


def test_backup_verify_then_restore(private_pg: tuple[Path, str], home: Path) -> None:
    _, url = private_pg
    env = {"HARVEST_DATABASE_URL": url}
    store(url, [signal(n) for n in range(50)])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO rejects (source, reason, raw) VALUES ('s1', 'no_title', "
                     "'{\"x\": 1}')")
        before = table(conn)
    done = harvest("backup", "--verify", home=home, env=env)
    assert done.returncode == 0, done.stderr
    assert "row counts match in all" in done.stdout
    dump = next((home / "backups").glob("*.dump"))
    manifest = json.loads(next((home / "backups").glob("*.manifest.json")).read_text())
    assert manifest["tables"]["signals"] == 50 and manifest["tables"]["rejects"] == 1
    with psycopg.connect(url, autocommit=True) as conn:  # the scratch database is gone
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE "
                            "'harvest_verify_%'").fetchone() == (0,)
        conn.execute("DELETE FROM signals WHERE key LIKE 'key-1%'")
    store(url, [signal(999)])

    refused = harvest("restore", str(dump), home=home, env=env)
    assert refused.returncode == 2 and "add --force" in refused.stderr
    done = harvest("restore", str(dump), "--force", home=home, env=env)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(url) as conn:
        assert table(conn) == before
    checked = harvest("verify", home=home, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    store(url, [signal(1000)])  # sequences came back with the data


def test_a_dump_pg_restore_cannot_read_leaves_the_database_as_it_was(
    private_pg: tuple[Path, str], home: Path
) -> None:
    # psql got pg_restore's output through a pipe and committed at its end: an empty or
    # cut dump (its manifest made to match) committed the clean-up alone, an empty database.
    _, url = private_pg
    env = {"HARVEST_DATABASE_URL": url}
    store(url, [signal(n) for n in range(30)])
    assert harvest("backup", home=home, env=env).returncode == 0
    dump = next((home / "backups").glob("*.dump"))
    manifest_file = next((home / "backups").glob("*.manifest.json"))
    manifest = json.loads(manifest_file.read_text())
    whole = dump.read_bytes()
    with psycopg.connect(url) as conn:
        before = table(conn)
    for broken in (b"", whole[: len(whole) // 2], whole[: len(whole) - 200]):
        dump.write_bytes(broken)
        manifest_file.write_text(json.dumps({**manifest, "sha256": sha256_of(dump),
                                             "bytes": len(broken)}))
        done = harvest("restore", str(dump), "--force", home=home, env=env)
        with psycopg.connect(url) as conn:
            assert table(conn) == before, len(broken)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "nothing was restored and the database is as it was" in done.stderr
    # A backup of a newer harvest's schema (the nightly one after a bad release migrated)
    # replaced the database with one no command could use, then promised a migration; a
    # manifest without its table counts was read only after the database was replaced.
    dump.write_bytes(whole)
    for changed, said in (({"schema_revision": "0099"}, "holds schema 0099, which this code"),
                          ({"tables": None}, "lists no table counts")):
        manifest_file.write_text(json.dumps({**manifest, **changed}))
        done = harvest("restore", str(dump), "--force", home=home, env=env)
        assert done.returncode == 2 and said in done.stderr, done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        with psycopg.connect(url) as conn:
            assert table(conn) == before


def test_a_backup_verify_stopped_drops_its_scratch_database(
    private_pg: tuple[Path, str], home: Path
) -> None:
    # SIGTERM (cron's timeout, a systemd stop) left harvest_verify_… behind, a full copy of
    # the data that the orphaned pg_restore finished, and `harvest verify` said clean.
    _, url = private_pg
    env = {"HARVEST_DATABASE_URL": url}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO signals (key, source, kind, title, text, fetched_at) "
                     "SELECT 'k' || g, 's', 'feed', 't' || g, repeat(md5(g::text), 64), now() "
                     "FROM generate_series(1, 40000) g")
    assert harvest("backup", home=home, env=env).returncode == 0
    dump = next((home / "backups").glob("*.dump"))
    scratch = ("SELECT count(*) FROM pg_database WHERE datname LIKE 'harvest_verify_%'")
    verifying = subprocess.Popen(
        [sys.executable, "-m", "harvester.cli", "backup", "verify", str(dump)], cwd=ROOT,
        env=harvest_env(home, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for(lambda: conn.execute(scratch).fetchone() != (0,),
                     "the verification's scratch database", seconds=60, every=0.01)
            verifying.send_signal(signal_module.SIGTERM)
            verifying.communicate(timeout=60)
            assert verifying.returncode == 128 + signal_module.SIGTERM
            time.sleep(1)  # an orphaned pg_restore would go on restoring
            assert conn.execute(scratch).fetchone() == (0,)
            # What a SIGKILL leaves is reported by `harvest verify`.
            conn.execute("CREATE DATABASE harvest_verify_0123456789")
    finally:
        verifying.kill()
    checked = harvest("verify", home=home, env=env)
    out = " ".join(checked.stdout.split())
    assert "1 scratch databases of interrupted `backup verify` runs are left: " \
           "harvest_verify_0123456789" in out, out


def test_verify_finds_problems_and_does_not_migrate(private_pg: tuple[Path, str],
                                                     home: Path) -> None:
    _, url = private_pg
    env = {"HARVEST_DATABASE_URL": url}
    store(url, [signal(n) for n in range(3)])  # their run id has no crawl_runs row
    with psycopg.connect(url, autocommit=True) as conn:  # `harvest demo` shares the database
        conn.execute("INSERT INTO sources_state (source) VALUES ('demo-tech'), ('renamed')")
    done = harvest("verify", home=home, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sources not in the sources file: renamed (renamed" in done.stdout
    assert "ok amcheck:" in done.stdout and "B-tree indexes checked" in done.stdout
    assert "warning runs: 3 signals rows name 1 crawl runs" in done.stdout
    # The checks are the ones docs/ops-commands.md names, also when they pass.
    assert "ok clusters: every cluster id points to a signal" in done.stdout
    strict = harvest("verify", "--strict", home=home, env=env)
    assert strict.returncode == 1
    assert strict.stderr.strip() == "2 warning(s) found (--strict)"  # runs, sources

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('signals', 'id'), 1)")
        # At max(id) but not yet called: nextval hands out max(id) itself ("is at 0" was
        # said of it).
        conn.execute("INSERT INTO rejects (source, reason) VALUES ('s', 'no_title')")
        conn.execute("SELECT setval(pg_get_serial_sequence('rejects', 'id'), "
                     "(SELECT max(id) FROM rejects), false)")
        conn.execute("UPDATE alembic_version SET version_num = '0006'")
    (home / "spool").mkdir()
    (home / "spool" / "20260101T000000000000-broken.bad").write_text("{")
    done = harvest("verify", "--json", home=home, env=env)
    assert done.returncode == 1
    found = [f for f in json.loads(done.stdout) if f["level"] == "problem"]
    assert {f["check"] for f in found} == {"schema", "sequences", "spool"}
    said = " ".join(f["message"] for f in found if f["check"] == "sequences")
    assert "public.signals_id_seq would hand out 2 next" in said, said
    assert "public.rejects_id_seq would hand out" in said
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0006",)


def test_stats_keeps_its_keys_and_adds_per_source_detail(
        db: psycopg.Connection[Any], pg_url: str, home: Path) -> None:
    store(pg_url, [signal(n, source="a" if n < 3 else "b") for n in range(5)])
    db.execute("INSERT INTO rejects (source, reason) VALUES ('b', 'no_title')")
    db.execute("INSERT INTO sources_state (source, last_success) VALUES ('a', now())")
    done = harvest("stats", "--json", home=home)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["signals"] == 5 and data["by_source"] == {"a": 3, "b": 2}
    assert data["rejects"] == {"no_title": 1} and data["spooled_batches"] == 0
    assert data["spool_set_aside"] == {"refused": 0, "unreadable": 0}
    assert {"runs", "last_run_finished_at"} <= set(data)
    assert (data["sources"]["a"]["signals"], data["sources"]["b"]["rejects"]) == (3, 1)
    assert data["sources"]["a"]["last_success"] is not None
    assert data["sources"]["b"]["last_success"] is None
    assert data["database_size_bytes"] > 0
    oldest = db.execute("SELECT min(first_seen) FROM signals").fetchone()
    assert oldest is not None and data["oldest_signal"] == oldest[0].isoformat()


def test_a_manifest_of_another_kind_names_the_command_that_restores_it(tmp_path: Path) -> None:
    from harvester.services.ops import OpsError, files

    data = tmp_path / "x.dump"
    data.write_bytes(b"x")
    manifest = tmp_path / "x.manifest.json"
    for written, wanted, says in (
        ({"kind": "backup"}, "snapshot", "describes a backup, not a snapshot; use "
                                         "`harvest restore`"),
        ({"kind": "archive"}, "backup", "describes an archive, not a backup; use "
                                        "`harvest archive restore`"),
        ({}, "snapshot", "is not a manifest harvest wrote (its kind is None)"),
    ):
        manifest.write_text(json.dumps({**written, "file": data.name}))
        with pytest.raises(OpsError, match=re.escape(says)):
            files.load(manifest, wanted)


def test_a_directory_that_does_not_exist_is_refused_not_nothing_to_do(tmp_path: Path) -> None:
    # A mistyped --dir said "nothing to replay" / "nothing to prune" and exited 0.
    for option in (["replay"], ["prune", "--keep", "1"]):
        result = harvest(*option, "--dir", str(tmp_path / "nope"), home=tmp_path / "home")
        assert result.returncode == 2 and "does not exist" in result.stderr


def test_restoring_an_empty_name_says_no_file_was_named(tmp_path: Path) -> None:
    # The runbook's "$(ls -t … | head -n 1)" with no backup gives "": it was read as the
    # current directory, "has no manifest (repo.manifest.json)".
    result = harvest("restore", "", "--force", home=tmp_path / "home", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: an empty name (the current directory) is a directory, not a backup file; "
        "`ls $HARVEST_HOME/backups` lists what there is")


def test_an_export_directory_that_cannot_be_made_is_one_sentence(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("")
    for command in (["snapshot"], ["backup"], ["archive", "--older-than", "1d"]):
        result = harvest(*command, "--dir", str(tmp_path / "afile" / "sub"), home=home)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip() == (f"error: cannot create {tmp_path / 'afile' / 'sub'} "
                                          "(Not a directory); choose another --dir or "
                                          "HARVEST_HOME")


def _file_size_limited(limit: int) -> None:
    """In the child: files may grow to ``limit`` bytes; past it a write fails (EFBIG) as
    on a full disk, rather than the signal killing the process."""
    signal_module.signal(signal_module.SIGXFSZ, signal_module.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_an_export_the_disk_cannot_hold_is_one_sentence_and_leaves_no_part(
    db: psycopg.Connection[Any], pg_url: str, home: Path, tmp_path: Path
) -> None:
    # A full disk printed a traceback (exit 1) and left the .tmp file behind.
    store(pg_url, [signal(n) for n in range(300)])
    age(db, [f"key-{n}" for n in range(300)], 10)
    out = tmp_path / "exports"
    for command in (["snapshot"], ["archive", "--older-than", "1d"]):
        result = subprocess.run(
            [sys.executable, "-m", "harvester.cli", *command, "--dir", str(out)],
            cwd=ROOT, env=harvest_env(home), capture_output=True, text=True, timeout=180,
            preexec_fn=lambda: _file_size_limited(20_000), check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("error: cannot write "), result.stderr
        assert "choose another --dir" in " ".join(result.stderr.split())
        assert list(out.iterdir()) == []
    assert db.execute("SELECT count(*) FROM signals").fetchone() == (300,)  # none archived
    # pg_dump is killed by the signal instead ("pg_dump failed: exit status -25").
    dumped = subprocess.run(
        [sys.executable, "-m", "harvester.cli", "backup", "--dir", str(out)],
        cwd=ROOT, env=harvest_env(home), capture_output=True, text=True, timeout=180,
        preexec_fn=lambda: _file_size_limited(20_000), check=False)
    assert dumped.returncode != 0 and "Traceback" not in dumped.stderr
    assert " ".join(dumped.stderr.split()) == (
        "error: pg_dump failed: killed by SIGXFSZ: the file grew past the file size limit "
        "(`ulimit -f`); raise the limit"), dumped.stderr
    assert list(out.iterdir()) == []


def test_restored_members_whose_head_is_not_in_the_file_join_no_stranger(
        db: psycopg.Connection[Any], pg_url: str, home: Path) -> None:
    # Restored where the head's id is another story's (another database), the members kept
    # that id as their cluster: the stranger gained their sources and a higher score.
    store(pg_url, [signal(n, source=f"s{n}") for n in range(3)])
    cluster(db, ["key-0", "key-1", "key-2"])
    head = db.execute("SELECT id FROM signals WHERE key = 'key-0'").fetchone()[0]
    age(db, ["key-1", "key-2"], 60)
    assert harvest("archive", "--older-than", "45d", home=home).returncode == 0
    archived = next((home / "archives").glob("*.csv"))
    db.execute("DELETE FROM signals WHERE key = 'key-0'")
    db.execute("INSERT INTO signals (id, key, source, kind, fetched_at, score, score_breakdown)"
               " VALUES (%s, 'stranger', 'garden', 'feed', now(), 10, '{}')", (head,))

    done = harvest("archive", "restore", str(archived), home=home)

    assert done.returncode == 0, done.stderr
    rows = dict(db.execute("SELECT key, coalesce(cluster_id, id) FROM signals").fetchall())
    assert rows["key-1"] != head and rows["key-2"] != head
    assert rows["key-1"] == rows["key-2"]  # still near-duplicates of each other
    assert db.execute("SELECT score, cluster_id FROM signals WHERE key = 'stranger'"
                      ).fetchone() == (10.0, None)
    assert db.execute("SELECT count(*) FROM cluster_sources WHERE cluster_id = %s",
                      (head,)).fetchone() == (0,)


def test_a_snapshot_restored_where_a_copy_is_stored_again_joins_its_story(
        db: psycopg.Connection[Any], pg_url: str, home: Path) -> None:
    # Between `restore` and `snapshot restore` a crawl stored one copy of a story again:
    # the restored copies kept their own cluster, and the story showed twice.
    store(pg_url, [signal(0, source="x"), signal(1, source="y")])
    cluster(db, ["key-0", "key-1"])
    assert harvest("snapshot", home=home).returncode == 0
    snapshot_file = next((home / "snapshots").glob("*.ndjson"))
    db.execute("DELETE FROM signals")
    store(pg_url, [signal(1, source="y")])
    done = harvest("snapshot", "restore", str(snapshot_file), home=home)
    assert done.returncode == 0, done.stderr
    stories = db.execute("SELECT DISTINCT coalesce(cluster_id, id) FROM signals").fetchall()
    assert len(stories) == 1
    assert db.execute("SELECT sources FROM cluster_sources").fetchall() == [(["x", "y"],)]


def test_a_tweet_from_a_snapshot_before_its_key_changed_is_restored_once(
        db: psycopg.Connection[Any], pg_url: str, home: Path) -> None:
    # Exported under its address as written (schema 0013), a tweet came back under that
    # key beside the copy today's key holds: one tweet, two signals.
    written = "https://x.com/alice/status/1234567890"
    old = {**signal(0), "url": written, "canonical_url": written, "key": url_key(written)}
    store(pg_url, [old])
    assert harvest("snapshot", home=home).returncode == 0
    snapshot_file = next((home / "snapshots").glob("*.ndjson"))
    db.execute("DELETE FROM signals")
    today = canonical_url(written)
    store(pg_url, [{**old, "canonical_url": today, "key": url_key(today)}])
    done = harvest("snapshot", "restore", str(snapshot_file), home=home)
    assert done.returncode == 0, done.stderr
    assert db.execute("SELECT key, canonical_url FROM signals").fetchall() == [
        (url_key(today), "https://x.com/i/web/status/1234567890")]


def test_verify_checks_the_schema_the_tables_are_in(
        private_pg: tuple[Path, str], tmp_path: Path) -> None:
    # With search_path set to another schema every command worked there, and verify looked
    # in 'public' only: "ok" after checking nothing, a sequence behind its rows missed.
    _, url = private_pg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE other")
    other = psycopg.conninfo.make_conninfo(url, dbname="other")
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA harv")
    harv = psycopg.conninfo.make_conninfo(other, options="-csearch_path=harv")
    env = {"HARVEST_DATABASE_URL": harv}
    assert harvest("migrate", home=tmp_path / "home", env=env).returncode == 0
    store(harv, [signal(n) for n in range(3)])
    with psycopg.connect(harv, autocommit=True) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('signals', 'id'), 1)")
    done = harvest("verify", "--json", home=tmp_path / "home", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    found = json.loads(done.stdout)
    said = " ".join(f["message"] for f in found if f["level"] == "problem")
    assert "harv.signals_id_seq would hand out 2 next" in said, said
    # And amcheck looked at harv's indexes: "0 B-tree indexes checked" was an ok.
    [amcheck] = [f["message"] for f in found if f["check"] == "amcheck"]
    assert int(amcheck.split()[0]) > 10, amcheck
