"""The store worker: a process that writes the crawl's batches to PostgreSQL.

The crawl process is CPU-bound on one core. Fingerprinting, cluster lookups, encoding the
binary COPY and the round trips of each batch's transaction happen here instead, on
another core, and they are not slowed down by the crawl's busy event loop (a round trip
waited there for a feed to finish parsing: ≈ 20 ms each, ten per batch).

The crawl keeps every batch until the worker acknowledges it, so a worker that dies loses
nothing: its unacknowledged batches are spooled by the crawl, and a batch that was
committed but not acknowledged is a no-op on replay (its id is in ``applied_batches``).

Protocol on a socket pair, one frame = 4-byte big-endian length + pickle: the crawl sends
``Config`` once, then ``("write", Batch)`` or ``("replay", spool_dir)``; the worker answers
each with an ``Outcome``, in order. It reads requests as they arrive, takes a batch's
fingerprints in a thread right away (``store.prepare``) and makes the batch's reads (key
lookup, nearest stored signals: ``store.plan_batch``) on a second connection, while its
first connection is still writing the batches before it; the writes themselves stay one
after the other, in order (docs/clusters.md: how a plan made before the batch ahead was
committed still sees that batch's rows). End of file on the socket
(the crawl closed it, or died) makes the worker exit once it has answered what it read: it
never outlives its crawl.

On the crawl's side the socket is blocking and served by two threads (one sends, one
reads replies), so a megabyte-sized batch goes out at the speed of the socket, not a
chunk per turn of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

import harvester
from harvester.messages import first_line
from harvester.services import gcfreeze
from harvester.services.batch import Batch, BatchResult
from harvester.services.dberrors import DB_DOWN
from harvester.services.replay import ReplayReport, replay_pending
from harvester.services.store import Plan, Recent, plan_batch, prepare, write_batch

_LENGTH = struct.Struct(">I")
logger = logging.getLogger(__name__)
MODULE = "harvester.services.store_worker"


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    connect_timeout: int
    reconnect_seconds: float
    cluster_distance: int
    #: The crawl's ``HARVEST_GC_THRESHOLD``, applied with its start-up objects frozen
    #: (services/gcfreeze.py); None (``HARVEST_GC_FREEZE_ENABLED`` off) leaves CPython's
    #: collector as it is. Each batch it unpickles is thousands of dicts and lists that
    #: stay alive until written, which CPython's 700 had collected through three
    #: generations: 10-13 µs a row of the worker's CPU in the bench crawl.
    gc_threshold: int | None = gcfreeze.DEFAULT_THRESHOLD


@dataclass(frozen=True, slots=True)
class Outcome:
    """``stored``/``replayed`` with a result, or ``unreachable`` (no connection; ``error``
    is set only when a connection was just attempted), ``down`` (the connection broke),
    ``refused`` (the database rejected the rows), ``failed`` (the worker could not write
    them: a bug, or a value nothing expected) or ``dead`` (the worker is gone)."""

    status: str
    result: BatchResult | None = None
    report: ReplayReport | None = None
    error: str = ""


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from a blocking socket, or None at end of file."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buffer)


class StoreWorker:
    """The crawl's handle on one worker process (see :class:`SharedWorkers`)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._sender: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replies: deque[asyncio.Future[Outcome]] = deque()
        self._ended: asyncio.Future[None] | None = None  # set when the reply stream ends
        self._closing = False  # close() was called: the end of the stream is expected

    @property
    def alive(self) -> bool:
        return self._ended is not None and not self._ended.done()

    async def start(self) -> None:
        """Start the process; raises ``OSError`` when it cannot be started."""
        ours, theirs = socket.socketpair()
        with theirs:
            package_root = str(Path(harvester.__file__).resolve().parents[1])
            pythonpath = os.pathsep.join(filter(None, (package_root,
                                                       os.environ.get("PYTHONPATH"))))
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", MODULE, str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": pythonpath},
                )
            except OSError:
                ours.close()
                raise
        self._sock = ours
        self._loop = asyncio.get_running_loop()
        self._ended = self._loop.create_future()
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="store-worker-send")
        threading.Thread(target=self._read_replies, name="store-worker-replies",
                         daemon=True).start()
        await self._send(_frame(self.config))

    async def write(self, batch: Batch) -> Outcome:
        return await self._request(("write", batch))

    async def replay(self, spool_dir: Path) -> Outcome:
        return await self._request(("replay", str(spool_dir)))

    async def close(self, timeout: float = 60.0) -> None:
        """Let the worker answer what it was sent, then wait for it to exit; a worker that
        has not exited after ``timeout`` seconds is killed (what it did not answer is
        reported ``dead`` to its callers, who spool it)."""
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                await self._send(None)  # end of file: the worker exits once it has answered
        if self._ended is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._ended), timeout)
            except TimeoutError:
                self._kill()
                await self._ended
        if self._proc is not None:
            try:
                await asyncio.to_thread(self._proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)
        if self._sender is not None:
            self._sender.shutdown(wait=False)
        if self._sock is not None:
            self._sock.close()

    async def _request(self, message: tuple[str, Any]) -> Outcome:
        if not self.alive or self._loop is None:
            return Outcome("dead", error="the store worker is not running")
        frame = _frame(message)
        reply: asyncio.Future[Outcome] = self._loop.create_future()
        self._replies.append(reply)
        # A failed send means the worker is gone: the reader sees end of file and
        # answers "dead".
        with contextlib.suppress(OSError):
            await self._send(frame)
        return await reply

    async def _send(self, frame: bytes | None) -> None:
        """Send on the sender thread, in call order; None shuts the sending side down."""
        assert self._loop is not None and self._sender is not None and self._sock is not None
        sock = self._sock
        job = sock.sendall if frame is not None else (lambda _: sock.shutdown(socket.SHUT_WR))
        await self._loop.run_in_executor(self._sender, job, frame)

    def _read_replies(self) -> None:
        """Reader thread: hand each reply to the event loop, in order, until end of file."""
        assert self._sock is not None
        error = ""
        try:
            while (head := _recv_exactly(self._sock, _LENGTH.size)) is not None:
                body = _recv_exactly(self._sock, _LENGTH.unpack(head)[0])
                if body is None:
                    break
                self._call(self._deliver, pickle.loads(body))
        except OSError:
            pass  # the socket was closed under us: the worker is gone
        except (pickle.UnpicklingError, AttributeError, ImportError, EOFError) as exc:
            error = f"unreadable reply: {exc}"
            self._kill()
        finally:
            self._call(self._finish, error)

    def _call(self, callback: Any, *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the crawl's loop has already closed
            self._loop.call_soon_threadsafe(callback, *args)

    def _deliver(self, outcome: Outcome) -> None:
        if self._replies:
            self._replies.popleft().set_result(outcome)

    def _finish(self, error: str) -> None:
        code = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(0.5)  # its socket closed: it exits, or has exited
        error = error or (f"exit status {code}" if code is not None else "its connection closed")
        if not self._closing:
            # Said even when no batch was under way (then no write reported it, and the
            # log only showed batches spooled with no reason).
            logger.warning("The store worker ended unexpectedly (%s): what it had not "
                           "stored goes to the spool, and a new worker is started for the "
                           "batches after HARVEST_STORE_RECONNECT_SECONDS", error)
        while self._replies:
            self._replies.popleft().set_result(Outcome("dead", error=error))
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()


class SharedWorkers:
    """One store worker per crawl process and configuration, shared by every crawler of
    the process (``harvest crawl`` runs one per source side by side): a worker costs
    ≈ 60 MB and two database connections. The last user to leave closes it."""

    def __init__(self) -> None:
        self._workers: dict[Config, StoreWorker] = {}
        self._users: dict[Config, set[int]] = {}
        self._lock: asyncio.Lock | None = None

    def running(self, config: Config, user: object) -> StoreWorker | None:
        worker = self._workers.get(config)
        if worker is None or not worker.alive:
            return None
        self._users.setdefault(config, set()).add(id(user))
        return worker

    async def start(self, config: Config, user: object) -> tuple[StoreWorker, bool]:
        """The running worker, else a new one (``OSError`` when it cannot be started), and
        whether a dead one was replaced."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if worker := self.running(config, user):
                return worker, False
            dead = self._workers.pop(config, None)
            if dead is not None:
                await dead.close()  # reap it before starting another
            worker = StoreWorker(config)
            await worker.start()
            self._workers[config] = worker
            self._users.setdefault(config, set()).add(id(user))
            return worker, dead is not None

    async def leave(self, user: object) -> None:
        """``user`` is done; close the workers nobody uses any more."""
        for config, users in list(self._users.items()):
            users.discard(id(user))
            if not users:
                del self._users[config]
                worker = self._workers.pop(config, None)
                if worker is not None:
                    await worker.close()


#: The crawl process's workers.
SHARED = SharedWorkers()


class _Database:
    """One of the worker's two connections (the writer's, the planner's); reconnects at
    most every ``reconnect_seconds``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._next_connect = 0.0
        self._error = ""

    async def handle(self, request: tuple[str, Any], plan: Plan | None = None,
                     recent: Recent | None = None) -> Outcome:
        kind, payload = request
        if not await self._connected():
            return Outcome("unreachable", error=self._error)
        assert self._conn is not None
        distance = self.config.cluster_distance
        try:
            if kind == "replay":
                report = await replay_pending(self._conn, Path(payload), distance)
                return Outcome("replayed", report=report)
            return Outcome("stored", result=await write_batch(self._conn, payload, distance,
                                                              plan, recent))
        except DB_DOWN as exc:
            await self._drop(exc)
            return Outcome("down", error=self._error)
        except psycopg.Error as exc:
            # The database is up but refused the rows (a bug or a value it cannot hold):
            # the crawl keeps them on disk for the operator rather than lose them.
            return Outcome("refused", error=first_line(exc))
        except Exception as exc:
            # Not the database's refusal but a failure of ours with these rows: the worker
            # outlives it (the transaction was rolled back), the crawl spools the batch, and
            # the traceback goes to the stderr this process shares with its crawl.
            traceback.print_exc()
            return Outcome("failed", error=f"{type(exc).__name__}: {first_line(exc)}")

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def plan(self, batch: Batch, recent: Recent) -> Plan | None:
        """The reads of ``batch``'s write (:func:`store.plan_batch`) on this connection, or
        None: the write then makes them itself, and reports what goes wrong."""
        if not batch.signals or not await self._connected():
            return None
        assert self._conn is not None
        try:
            return await plan_batch(self._conn, batch, recent, self.config.cluster_distance)
        except DB_DOWN as exc:
            await self._drop(exc)
        except Exception:  # the write meets it again, and answers for it
            logger.debug("store worker: planning a batch failed", exc_info=True)
        return None

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*DB_DOWN):
                await self._conn.close()

    async def _connected(self) -> bool:
        if self.connected:
            return True
        now = time.monotonic()
        self._error = ""
        if now < self._next_connect:
            return False
        self._next_connect = now + self.config.reconnect_seconds
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.config.url, connect_timeout=self.config.connect_timeout)
        except DB_DOWN as exc:
            await self._drop(exc)
            return False
        return True

    async def _drop(self, exc: BaseException) -> None:
        self._error = first_line(exc)
        await self.close()
        self._conn = None
        self._next_connect = time.monotonic() + self.config.reconnect_seconds


async def _read(reader: asyncio.StreamReader) -> Any:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))


async def _serve(fd: int) -> None:
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    try:
        config = await _read(reader)
    except asyncio.IncompleteReadError:
        return
    if config.gc_threshold is not None:
        gcfreeze.freeze(config.gc_threshold)
    # Two connections: the writer's, and the planner's, which makes the reads of a batch's
    # write (key lookup, nearest stored signals) while the writer still writes the batches
    # before it; the writes stay one after the other, in order. A batch's fingerprints are
    # taken in a thread as soon as it arrives (numpy releases the GIL).
    database, planner, recent = _Database(config), _Database(config), Recent()
    queue: asyncio.Queue[tuple[tuple[str, Any], asyncio.Future[Any]] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    steps: list[asyncio.Future[Any]] = []

    async def plan_after(before: asyncio.Future[Any] | None,
                         prepared: asyncio.Future[None], batch: Batch) -> Plan | None:
        # Plans are made in order, and none before a replay ahead of it has been written.
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        with contextlib.suppress(Exception):  # write_batch takes what is missing
            await prepared
        # While the writer has no connection, its attempts alone wait for the database.
        return await planner.plan(batch, recent) if database.connected else None

    with ThreadPoolExecutor(1, thread_name_prefix="store-prepare") as ahead:
        async def read_requests() -> None:
            before: asyncio.Future[Any] | None = None
            try:
                while True:
                    request = await _read(reader)
                    kind, payload = request
                    step: asyncio.Future[Any]
                    if kind == "write":
                        prepared = loop.run_in_executor(ahead, prepare, payload)
                        step = asyncio.ensure_future(plan_after(before, prepared, payload))
                    else:
                        step = loop.create_future()  # done once the request is handled
                    steps.append(step)
                    queue.put_nowait((request, step))
                    before = step
            except asyncio.IncompleteReadError:
                pass  # the crawl closed its end: everything sent is answered below
            finally:
                queue.put_nowait(None)

        reading = asyncio.create_task(read_requests())
        try:
            while (queued := await queue.get()) is not None:
                request, step = queued
                steps.remove(step)
                if request[0] == "write":
                    outcome = await database.handle(request, await step, recent)
                else:
                    outcome = await database.handle(request)
                    step.set_result(None)
                writer.write(_frame(outcome))
                await writer.drain()
        finally:
            reading.cancel()
            for step in steps:
                step.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await reading
            await asyncio.gather(*steps, return_exceptions=True)
            await database.close()
            await planner.close()
            writer.close()


def main(argv: list[str]) -> None:
    # Ctrl-C, SIGTERM and a hangup (sent to the terminal's whole process group) are for
    # the crawl, which shuts down cleanly and then closes the socket; the worker must stay
    # to write what the crawl flushes on its way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(ConnectionError):
        asyncio.run(_serve(int(argv[0])))


if __name__ == "__main__":
    # Through the package, not ``__main__``: pickled replies must name the classes by the
    # module the crawl knows them under.
    from harvester.services.store_worker import main as _main

    _main(sys.argv[1:])
