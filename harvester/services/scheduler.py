"""The scheduler: submit each enabled source to Scrapyd when it is due, on the least loaded
node, never twice and never lost.

State lives in PostgreSQL (``schedules``), so a restart picks up where the last process
stopped. Submitting is two-phase: the job id (``SOURCE.DUE_EPOCH``, chosen by us) is
committed as ``submitting`` before ``schedule.json`` is called, and marked ``submitted``
after. A scheduler that died in between finds the job on a node (then it was submitted) or
not (then it submits it under the same id): a run is neither lost nor doubled.

Rules per source and tick:

* paused (``harvest jobs pause``), disabled after failing, switched off by
  ``HARVEST_<KIND>_ENABLED`` or ``enabled = false`` → not submitted;
* not due yet → nothing; a never-scheduled source is due at once;
* its previous job still pending or running, or on a node that does not answer (it may
  still run there) → this window is skipped and counted (``skipped_running``): at most one
  job per source; a job that a node answering again does not list is ``lost``;
* an interrupted submission (``submitting``) of a paused or disabled source is dropped;
* due several times over (the scheduler was down) → one run, then the next due time after
  now: a missed window runs once on catch-up;
* nodes that do not answer are skipped and reported; with none up nothing is submitted and
  the source stays due; a node that answers "no" to ``schedule.json`` is passed over for
  the next one in the same pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from harvester.config import get_config
from harvester.services import queries
from harvester.services.scrapyd import Node, ScrapydError, ScrapydRefused
from harvester.sources import Source

logger = logging.getLogger(__name__)

# Any constant shared by every scheduler of one database: only one of them may run.
LOCK_KEY = 0x68617276  # "harv"
ACTIVE = ("pending", "running")
#: A job on a node that does not answer: it may still run there.
UNKNOWN = "unknown"


class SchedulerError(RuntimeError):
    """Something an operator must fix before the scheduler can work; one sentence."""


class SourceDisabled(SchedulerError):
    """The source was disabled after failing: a job would skip it and say "finished"."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class NodeView:
    """One node as seen in this tick."""

    node: Node
    up: bool = False
    load: int = 0
    error: str | None = None
    jobs: dict[str, str] = field(default_factory=dict)  # job id → pending|running|finished


class Cluster:
    """The Scrapyd nodes, asked once per tick for their load and jobs."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.views = [NodeView(n) for n in nodes]
        #: When the nodes were last asked: a job submitted since is in no listing yet.
        self.refreshed_at: datetime | None = None

    def refresh(self) -> None:
        self.refreshed_at = utcnow()
        for view in self.views:
            view.jobs.clear()
            try:
                view.load = view.node.load()
                listing = view.node.jobs()
            except ScrapydError as exc:
                view.up, view.error = False, str(exc)
                continue
            view.up, view.error = True, None
            for state in ("pending", "running", "finished"):
                for job in listing.get(state, []):
                    view.jobs[str(job.get("id"))] = state

    @property
    def down(self) -> list[NodeView]:
        return [v for v in self.views if not v.up]

    def unanswered(self, url: str | None) -> bool:
        """Whether the node at ``url`` is configured and did not answer this tick: what
        it runs is unknown, not gone."""
        return any(v.node.url == url and not v.up for v in self.views)

    def find(self, job_id: str) -> tuple[NodeView, str] | None:
        for view in self.views:
            if view.up and job_id in view.jobs:
                return view, view.jobs[job_id]
        return None

    def least_loaded(self) -> NodeView | None:
        up = [v for v in self.views if v.up]
        return min(up, key=lambda v: v.load) if up else None

    def mark_down(self, view: NodeView, error: str) -> None:
        view.up, view.error = False, error


@dataclass(slots=True)
class TickReport:
    submitted: list[tuple[str, str, str]] = field(default_factory=list)  # source, job, node
    confirmed: list[str] = field(default_factory=list)  # interrupted submissions found on a node
    skipped_running: list[tuple[str, str]] = field(default_factory=list)  # source, state
    finished: list[tuple[str, str]] = field(default_factory=list)  # source, outcome
    not_submitted: list[tuple[str, str]] = field(default_factory=list)  # source, why
    nodes_down: list[tuple[str, str]] = field(default_factory=list)  # url, why
    lost: list[tuple[str, str]] = field(default_factory=list)  # source, job no node lists
    #: due sources whose job is on a node that does not answer: source, job, node
    unanswered: list[tuple[str, str, str]] = field(default_factory=list)


_COLUMNS = ("source", "next_due", "paused", "job_id", "job_node", "job_state", "job_due",
            "job_submitted_at", "last_outcome", "last_finished_at", "skipped_running",
            "planned_for")


def plan(source: Source) -> str:
    """The schedule a ``next_due`` is computed with (``schedules.planned_for``)."""
    return f"cron {source.cron}" if source.cron else f"every {source.interval}"


def load_rows(conn: psycopg.Connection[Any],
              source: str | None = None) -> dict[str, dict[str, Any]]:
    """Every source's ``schedules`` row, or only ``source``'s."""
    where = " WHERE source = %s" if source is not None else ""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM schedules{where}",  # fixed columns
                    (source,) if source is not None else None)
        return {row["source"]: row for row in cur.fetchall()}


def _update(conn: psycopg.Connection[Any], source: str, **values: Any) -> None:
    assigns = ", ".join(f"{k} = %({k})s" for k in values)  # keys are our own column names
    conn.execute(
        "INSERT INTO schedules (source) VALUES (%(source)s) ON CONFLICT (source) DO NOTHING",
        {"source": source},
    )
    conn.execute(f"UPDATE schedules SET {assigns}, updated_at = now() "  # type: ignore[arg-type]
                 "WHERE source = %(source)s", {**values, "source": source})


#: The first key of the per-source locks (two int4 keys: apart from LOCK_KEY's bigint).
_SOURCE_LOCK = 0x68617277  # "harw"


@contextmanager
def _source_lock(conn: psycopg.Connection[Any], source: str) -> Iterator[None]:
    """Hold the source's advisory lock (session level) for the block."""
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_SOURCE_LOCK, source))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_SOURCE_LOCK, source))


def set_paused(conn: psycopg.Connection[Any], source: str, paused: bool) -> None:
    _update(conn, source, paused=paused)


def catch_up(source: Source, due: datetime, now: datetime) -> datetime:
    """The next due time after a run for ``due``: the following window, or — when that is
    already past (the scheduler was down) — the first window after now."""
    following = source.next_due(due)
    return following if following > now else source.next_due(now)


# The run's own verdict, as `harvest stats` judges it (a job runs one source): Scrapy's
# finish reason said "finished, 1 errors" of a failed run and of a partly failed one alike,
# and "finished" of a job that skipped its disabled source.
_RECORDED_RUN = f"""
SELECT finished_at, {queries.RUN_OUTCOME} AS outcome, errors FROM (
    SELECT finished_at, finish_reason, errors, stats -> 'harvest/by_source' -> sources[1]
           AS counters
    FROM crawl_runs WHERE job_id = %s ORDER BY started_at DESC LIMIT 1) AS run
"""


# The same for many jobs at once, those whose run recorded its end (`harvest jobs list`).
_FINISHED_RUNS = f"""
SELECT job_id, {queries.RUN_OUTCOME} AS outcome, errors FROM (
    SELECT DISTINCT ON (job_id) job_id, finished_at, finish_reason, errors,
           stats -> 'harvest/by_source' -> sources[1] AS counters
    FROM crawl_runs WHERE job_id = ANY(%s) ORDER BY job_id, started_at DESC) AS run
WHERE finished_at IS NOT NULL
"""


def _said(outcome: str, errors: int) -> str:
    return f"{outcome}, {errors} errors" if errors else str(outcome)


def _recorded_run(conn: psycopg.Connection[Any],
                  job_id: str) -> tuple[datetime | None, str] | None:
    """When the job's crawl recorded its end in ``crawl_runs`` (None while it has not) and
    its outcome; None when the job recorded no run."""
    row = conn.execute(_RECORDED_RUN, (job_id,)).fetchone()
    if row is None:
        return None
    finished_at, outcome, errors = row
    return finished_at, _said(outcome, errors)


#: The outcome of a finished job whose crawl recorded no run (killed, cancelled before it
#: started, or its record still in the spool).
NO_RUN = "finished (no run recorded)"


def finished_outcomes(conn: psycopg.Connection[Any], job_ids: list[str]) -> dict[str, str]:
    """Per job whose crawl recorded its end, its outcome, before a scheduler's pass has
    seen it finish (one query for them all); jobs running or with no run are not in it."""
    return {job: _said(outcome, errors)
            for job, outcome, errors in conn.execute(_FINISHED_RUNS, (job_ids,)).fetchall()}


def _outcome(conn: psycopg.Connection[Any], job_id: str) -> str:
    run = _recorded_run(conn, job_id)
    return run[1] if run else NO_RUN


class Scheduler:
    """One tick at a time; ``runnable`` says which sources may run (enabled, not disabled)."""

    def __init__(self, conn: psycopg.Connection[Any], cluster: Cluster,
                 spider_for: Callable[[Source], str],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.conn = conn
        self.cluster = cluster
        self.spider_for = spider_for
        self.clock = clock

    def lock(self) -> None:
        """Become the only scheduler of this database, or say who is."""
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not row or not row[0]:
            raise SchedulerError("another `harvest scheduler` is already running against this "
                                 "database; stop it first (only one may submit jobs)")

    def disabled(self) -> set[str]:
        rows = self.conn.execute("SELECT source FROM sources_state WHERE disabled").fetchall()
        return {r[0] for r in rows}

    def tick(self, sources: Iterable[Source]) -> TickReport:
        now = self.clock()
        report = TickReport()
        self.cluster.refresh()
        report.nodes_down = [(v.node.url, v.error or "down") for v in self.cluster.down]
        disabled = self.disabled()
        config = get_config()
        for source in sources:
            # Under the source's lock, its row read now: a `harvest jobs run` or `POST
            # /crawl` since the tick began must not be submitted a second time.
            with _source_lock(self.conn, source.name):
                row = load_rows(self.conn, source.name).get(source.name) or {
                    c: None for c in _COLUMNS} | {
                    "source": source.name, "paused": False, "skipped_running": 0}
                self._tick_one(source, row, report, disabled, config, now)
        return report

    def _tick_one(self, source: Source, row: dict[str, Any], report: TickReport,
                  disabled: set[str], config: Any, now: datetime) -> None:
        if not source.enabled or not config.kind_enabled(source.kind):
            # Never submitted by the scheduler, but a job `harvest jobs run` started
            # still gets its outcome in `harvest jobs list`.
            if row["job_state"] in ("submitting", "submitted"):
                self._settle(source, row, report, resubmit=False)
            return
        held = bool(row["paused"]) or source.name in disabled
        running = self._settle(source, row, report, resubmit=not held)
        if held:
            return
        due = self._replanned(source, row, now)
        if due > now:
            return
        if running:
            self.conn.execute(
                "UPDATE schedules SET skipped_running = skipped_running + 1, "
                "next_due = %s, updated_at = now() WHERE source = %s",
                (catch_up(source, due, now), source.name))
            if running == UNKNOWN:
                report.unanswered.append((source.name, row["job_id"], row["job_node"]))
            else:
                report.skipped_running.append((source.name, running))
            # Info, not a warning: the report says it, and a warning also reached stderr
            # bare (no logging configured), a second line saying "pending" to its "running".
            logger.info("%s is due but its job %s is still %s: skipped this window",
                           source.name, row["job_id"],
                           f"unknown (its node {row['job_node']} does not answer)"
                           if running == UNKNOWN else running)
            return
        job_id = f"{source.name}.{int(due.timestamp())}"
        self._submit(source, job_id, due, catch_up(source, due, now), report, planned=True)

    def _replanned(self, source: Source, row: dict[str, Any], now: datetime) -> datetime:
        """The row's next due time, planned again from its last run when the file's
        ``interval`` or ``cron`` changed since it was computed (an edit from 1d to 1h
        waited up to a day); a never-run source is due now."""
        due: datetime = row["next_due"] or now
        if row["next_due"] is None or row["planned_for"] == plan(source):
            return due
        if row["planned_for"] is not None:  # None: planned before the column existed
            due = source.next_due(row["job_due"]) if row["job_due"] else now
            logger.info("%s: schedule changed from %s to %s; next due %s", source.name,
                        row["planned_for"], plan(source), due.isoformat())
        _update(self.conn, source.name, next_due=due, planned_for=plan(source))
        return due

    def run_now(self, source: Source) -> tuple[str, str]:
        """Submit one source at once (``harvest jobs run``, ``POST /crawl``); its schedule is
        left as is. One at a time per source: two requests at once both saw no job running
        and both submitted (under one id, as ids counted seconds)."""
        with _source_lock(self.conn, source.name):
            return self._run_now(source)

    def _run_now(self, source: Source) -> tuple[str, str]:
        disabled = self.conn.execute(
            "SELECT consecutive_failures FROM sources_state WHERE source = %s AND disabled",
            (source.name,)).fetchone()
        if disabled is not None:
            # It was submitted, "submitted" said, and the job skipped it doing nothing.
            raise SourceDisabled(
                f"{source.name} is disabled after {disabled[0]} failed runs in a row, so a "
                f"job would skip it; re-enable it with `harvest sources enable {source.name}`")
        self.cluster.refresh()
        row = load_rows(self.conn, source.name).get(source.name)
        report = TickReport()
        if row is not None:
            running = self._settle(source, row, report)
            if running == UNKNOWN:
                raise SchedulerError(f"{source.name} has job {row['job_id']} on "
                                     f"{row['job_node']}, which does not answer; start that "
                                     "node again (its job may still run there)")
            if running:
                raise SchedulerError(f"{source.name} already has job {row['job_id']} {running} "
                                     f"on {row['job_node']}; wait for it to finish")
        now = self.clock()
        job_id = f"{source.name}.manual.{int(now.timestamp() * 1000)}"
        next_due = row["next_due"] if row else None
        if not self._submit(source, job_id, now, next_due, report):
            why = report.not_submitted[-1][1] if report.not_submitted else "no node took it"
            raise SchedulerError(f"{source.name} was not submitted: {why}")
        return report.submitted[-1][1], report.submitted[-1][2]

    # -- internals ---------------------------------------------------------------------

    def _settle(self, source: Source, row: dict[str, Any], report: TickReport, *,
                resubmit: bool = True) -> str | None:
        """Bring the row's job up to date with what the nodes say; return "pending" or
        "running" when that job is still active, ``UNKNOWN`` when its node does not answer
        (it may still run there: the source waits rather than run twice), else None. An
        interrupted submission is submitted again only when ``resubmit`` (the source is
        neither paused nor disabled)."""
        job_id, state = row["job_id"], row["job_state"]
        if not job_id or state not in ("submitting", "submitted"):
            return None
        found = self.cluster.find(job_id)
        submitted = row["job_submitted_at"]
        if found is None and state == "submitted" and submitted is not None and (
                self.cluster.refreshed_at is None or submitted >= self.cluster.refreshed_at):
            return "pending"  # submitted by someone else since the nodes were asked
        if found is None and self.cluster.unanswered(row["job_node"]):
            run = _recorded_run(self.conn, job_id)
            if run is None or run[0] is None:
                return UNKNOWN
        if state == "submitting":
            if found is None:
                # Never reached a node (the scheduler stopped between the two phases, or
                # the node refused it): submit it now under the same id, on whichever node
                # is least loaded; a paused or disabled source's is dropped instead.
                if not resubmit:
                    _update(self.conn, source.name, job_state="not submitted",
                            last_outcome="not submitted (paused or disabled)")
                    return None
                self._submit(source, job_id, row["job_due"], row["next_due"], report)
                return "pending" if report.submitted and report.submitted[-1][1] == job_id \
                    else None
            view, _ = found
            _update(self.conn, source.name, job_state="submitted", job_node=view.node.url,
                    job_submitted_at=row["job_submitted_at"] or self.clock())
            report.confirmed.append(source.name)
            state = "submitted"
        if found is None:
            run = _recorded_run(self.conn, job_id)
            if run is not None and run[0] is not None:
                # The node is down or forgot its finished jobs, but the crawl recorded its
                # end: the outcome is known.
                ended, outcome = run
                _update(self.conn, source.name, job_state="finished", last_outcome=outcome,
                        last_finished_at=ended)
                report.finished.append((source.name, outcome))
                return None
            # Its node answers and does not list it (cancelled before it started, restarted,
            # or it forgot its finished jobs): its outcome is unknown; do not block the
            # source.
            _update(self.conn, source.name, job_state="lost",
                    last_outcome="lost (its node no longer lists it: cancelled before it "
                                 "started, or the node restarted)")
            report.lost.append((source.name, job_id))
            logger.info("%s: job %s is listed by no node (cancelled before it started, or "
                        "%s restarted?): marked lost", source.name, job_id, row["job_node"])
            return None
        view, job_state = found
        if job_state in ACTIVE:
            return job_state
        outcome = _outcome(self.conn, job_id)
        _update(self.conn, source.name, job_state="finished", last_outcome=outcome,
                last_finished_at=self.clock())
        report.finished.append((source.name, outcome))
        return None

    def _submit(self, source: Source, job_id: str, due: datetime | None,
                next_due: datetime | None, report: TickReport, *, planned: bool = False
                ) -> bool:
        """Submit ``job_id`` to the least loaded node; ``planned`` when ``next_due`` was
        computed from the source's schedule now (it is recorded as ``planned_for``)."""
        planned_for = {"planned_for": plan(source)} if planned else {}
        while True:
            view = self.cluster.least_loaded()
            if view is None:
                why = "; ".join(v.error or f"{v.node.url} is down" for v in self.cluster.down)
                report.not_submitted.append((source.name, "no Scrapyd node can take it"
                                             + (f" ({why})" if why else "")))
                return False
            # Phase 1: the intent, committed (autocommit) before any node hears of it.
            _update(self.conn, source.name, job_id=job_id, job_node=view.node.url,
                    job_state="submitting", job_due=due, next_due=next_due,
                    job_submitted_at=None, **planned_for)
            try:
                view.node.schedule(self.spider_for(source), jobid=job_id, source=source.name)
                break
            except ScrapydRefused as exc:
                # It answered no (an egg without this spider): nothing runs there, so the
                # next node may take it in this same pass.
                self.cluster.mark_down(view, str(exc))
                report.nodes_down.append((view.node.url, str(exc)))
            except ScrapydError as exc:
                # No answer: it may have taken the job. Next tick looks for it there first.
                self.cluster.mark_down(view, str(exc))
                report.nodes_down.append((view.node.url, str(exc)))
                report.not_submitted.append((source.name, str(exc)))
                return False
        # Phase 2: submitted.
        _update(self.conn, source.name, job_state="submitted", job_submitted_at=self.clock())
        view.load += 1
        view.jobs[job_id] = "pending"
        report.submitted.append((source.name, job_id, view.node.url))
        return True
