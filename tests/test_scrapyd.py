"""Scrapyd runs the crawls: real Scrapyd nodes on loopback, the project egg deployed, jobs
scheduled through the JSON API and by `harvest scheduler`, results in PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.types.json import Jsonb

from harvester.services import scheduler
from harvester.services.localsite import LocalSite
from tests.conftest import ROOT, free_port, harvest, write_sources
from tests.feeds import items, rss
from tests.scrapydnode import CREDENTIALS, Node

NAMES = ("alpha", "beta", "gamma", "delta", "slow")
JOB_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def sources_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalSite]]:
    root = tmp_path_factory.mktemp("scrapyd-site")
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    for name in NAMES:
        (root / f"{name}.xml").write_text(rss(items(name, 3)))
    path = tmp_path_factory.mktemp("scrapyd-sources") / "sources.toml"
    with LocalSite(root) as site:
        site.set_delay("/slow.xml", 6.0)
        write_sources(path, [{"name": n, "kind": "feed", "interval": "1h",
                              "urls": [f"{site.url}/{n}.xml"]} for n in NAMES])
        yield path, site


@pytest.fixture(scope="module")
def nodes(sources_file: tuple[Path, LocalSite],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    path, _ = sources_file
    started: list[Node] = []
    try:
        for i in range(2):
            port = free_port()
            env = {**CREDENTIALS, "SCRAPYD_HTTP_PORT": str(port)}
            # The operator's two ways to name the sources file its jobs crawl.
            if i == 0:
                env["HARVEST_SOURCES"] = str(path)
            node = Node(tmp_path_factory.mktemp(f"scrapyd-home-{i}"), port, env,
                        sources=path if i == 1 else None)
            node.start()
            started.append(node)
        yield started
    finally:
        for node in started:
            node.stop()


def _wait_finished(node: Node, job_ids: list[str]) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        finished = {j["id"] for j in node.jobs()["finished"]}
        if set(job_ids) <= finished:
            return
        time.sleep(0.5)
    pytest.fail(f"jobs {job_ids} did not finish on {node.url} in {JOB_TIMEOUT_S} s")


def _scheduler_env(nodes: list[Node], path: Path) -> dict[str, str]:
    return {**CREDENTIALS, "HARVEST_SOURCES": str(path),
            "HARVEST_SCRAPYD_URLS": ",".join(n.url for n in nodes)}


def _all_jobs(nodes: list[Node]) -> dict[str, list[str]]:
    """Node URL → every job id it knows (pending, running, finished)."""
    return {n.url: n.job_ids() for n in nodes}


def _jobs_of(nodes: list[Node], source: str) -> list[str]:
    return [j for ids in _all_jobs(nodes).values() for j in ids
            if j.split(".")[0] == source]


def test_schedule_json_crawl_lands_in_postgres_with_its_job_id(
    nodes: list[Node], db: psycopg.Connection[Any]
) -> None:
    node = nodes[0]
    # Security: the API wants credentials.
    assert requests.get(f"{node.url}/daemonstatus.json", timeout=10).status_code == 401
    spiders = node.api("listspiders.json", project="harvester")["spiders"]
    assert {"feed", "reddit", "hackernews", "x", "pages", "sitemap", "rendered"} <= set(spiders)

    job = node.api("schedule.json", project="harvester", spider="feed", source="alpha")["jobid"]
    _wait_finished(node, [job])

    assert db.execute("SELECT count(*) FROM signals WHERE source = 'alpha'").fetchone() == (3,)
    run = db.execute("SELECT job_id, sources, finish_reason FROM crawl_runs").fetchone()
    assert run == (job, ["alpha"], "finished")


def test_starting_again_on_another_port_names_the_one_running(nodes: list[Node]) -> None:
    # It said "Scrapyd running at <the port asked for>" of one listening elsewhere.
    node = nodes[0]
    result = harvest("scrapyd", "start", "--no-deploy", home=node.home,
                     env={**node.env, "SCRAPYD_HTTP_PORT": str(free_port())})
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Scrapyd is already running at {node.url}" in result.stderr
    # With another sources file it said "running", and its jobs kept reading the old one.
    other = write_sources(node.home / "other.toml", [
        {"name": "elsewhere", "kind": "feed", "urls": ["http://127.0.0.1:9/f.xml"]}])
    result = harvest("--sources", str(other), "scrapyd", "start", "--no-deploy",
                     home=node.home, env=node.env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert " ".join(result.stderr.split()).endswith(
        f"to start it with {other}"), result.stderr


def test_deploying_with_the_wrong_password_says_so(nodes: list[Node], home: Path) -> None:
    # The node answers 401 with HTML: "could not deploy … (JSONDecodeError)".
    result = harvest("scrapyd", "deploy", home=home, timeout=300, env={
        **CREDENTIALS, "HARVEST_SCRAPYD_URLS": f"http://ops:wrong@127.0.0.1:{nodes[0].port}"})
    assert result.returncode != 0
    # The credentials came from the URL, which wins over SCRAPYD_USERNAME/PASSWORD: it said
    # to set those.
    assert ("refused our credentials (401); fix the user:password of its URL in "
            "HARVEST_SCRAPYD_URLS") in result.stdout + result.stderr
    assert "JSONDecodeError" not in result.stdout + result.stderr
    url = f"http://127.0.0.1:{nodes[0].port}"
    for env, said in (({**CREDENTIALS, "SCRAPYD_PASSWORD": "wrong"},
                       "refused our credentials (401); set SCRAPYD_USERNAME"),
                      ({"SCRAPYD_USERNAME": "", "SCRAPYD_PASSWORD": ""},
                       "asks for credentials (401); set SCRAPYD_USERNAME")):
        result = harvest("scrapyd", "status", home=home,
                         env={**env, "HARVEST_SCRAPYD_URLS": url})
        assert result.returncode != 0 and said in result.stdout + result.stderr, result.stdout


def test_credentials_in_a_node_url_are_percent_decoded(nodes: list[Node], home: Path) -> None:
    # A password with ":" "@" "#" can only be written encoded in a URL; it was sent as is.
    encoded = f"http://ops:test%2Dsecret@127.0.0.1:{nodes[0].port}"
    result = harvest("scrapyd", "status", home=home,
                     env={"HARVEST_SCRAPYD_URLS": encoded, "SCRAPYD_USERNAME": "",
                          "SCRAPYD_PASSWORD": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"up {nodes[0].url}" in result.stdout and "secret" not in result.stdout


def test_scheduler_spreads_jobs_and_a_stopped_node_is_skipped(
    nodes: list[Node], sources_file: tuple[Path, LocalSite], db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    path, _ = sources_file
    env = _scheduler_env(nodes, path)
    home = tmp_path / "sched"
    four = ("alpha", "beta", "gamma", "delta")
    for name in ("slow",):  # keep the slow source out of this test
        assert harvest("--sources", str(path), "jobs", "pause", name, home=home,
                       env=env).returncode == 0

    first = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    placed = {n.url: [j for j in n.job_ids() if j.split(".")[0] in four] for n in nodes}
    assert all(len(ids) == 2 for ids in placed.values()), placed  # least loaded: 2 and 2
    for node, ids in zip(nodes, placed.values(), strict=True):
        _wait_finished(node, ids)
    # Each node's jobs crawled the sources file it was started with (env or --sources).
    stored = dict(db.execute("SELECT source, count(*) FROM signals GROUP BY source").fetchall())
    assert stored == dict.fromkeys(four, 3)

    # Every source due again; node 2 stopped: node 1 takes all the work.
    db.execute("UPDATE schedules SET next_due = now() - interval '1 second'")
    nodes[1].stop()
    try:
        second = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"node down {nodes[1].url}" in second.stdout
        # The stopped node's jobs had finished and recorded their runs: not "lost".
        on_stopped = sorted({j.split(".")[0] for j in placed[nodes[1].url]})
        outcomes = dict(db.execute("SELECT source, last_outcome FROM schedules "
                                   "WHERE source = ANY(%s)", (on_stopped,)).fetchall())
        assert outcomes == dict.fromkeys(on_stopped, "succeeded"), outcomes
        after = [j for j in nodes[0].job_ids() if j.split(".")[0] in four]
        assert len(after) == len(placed[nodes[0].url]) + 4
        _wait_finished(nodes[0], after)
    finally:
        nodes[1].start()
    stored = dict(db.execute("SELECT source, count(*) FROM signals GROUP BY source").fetchall())
    assert stored == dict.fromkeys(four, 3)
    states = db.execute("SELECT count(*) FROM schedules WHERE job_node = %s",
                        (nodes[0].url,)).fetchone()
    assert states == (4,)


def test_restarted_scheduler_neither_loses_nor_doubles_a_run(
    nodes: list[Node], sources_file: tuple[Path, LocalSite], db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    path, _ = sources_file
    env = _scheduler_env(nodes, path)
    home = tmp_path / "sched"
    before = {name: set(_jobs_of(nodes, name)) for name in ("alpha", "beta")}
    for name in ("gamma", "delta", "slow"):
        harvest("--sources", str(path), "jobs", "pause", name, home=home, env=env)

    command = [sys.executable, "-m", "harvester.cli", "--sources", str(path), "scheduler",
               "--tick", "0.5"]
    full_env = {**os.environ, "HARVEST_HOME": str(home), **env}
    first = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            submitted = db.execute("SELECT count(*) FROM schedules WHERE job_state = 'submitted'"
                                   " AND source IN ('alpha', 'beta')").fetchone()
            if submitted == (2,):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the scheduler did not submit both sources")
    finally:
        first.kill()  # no goodbye: as if the machine went down
        first.wait()

    # A submission interrupted between its two phases: committed intent, never sent.
    db.execute("UPDATE schedules SET job_state = 'submitting', job_id = 'beta.interrupted', "
               "next_due = now() + interval '1 hour' WHERE source = 'beta'")
    second = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4)  # several ticks
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
    assert second.returncode == 0, output

    new = {name: set(_jobs_of(nodes, name)) - before[name] for name in ("alpha", "beta")}
    assert len(new["alpha"]) == 1, new  # submitted once, not again after the restart
    assert len(new["beta"]) == 2 and "beta.interrupted" in new["beta"], new  # none lost
    for node in nodes:
        _wait_finished(node, [j for j in node.job_ids() if j in new["alpha"] | new["beta"]])
    recorded = {r[0] for r in db.execute("SELECT job_id FROM crawl_runs").fetchall()}
    assert new["alpha"] | new["beta"] <= recorded


def test_running_job_blocks_its_source_missed_windows_run_once_and_pause_works(
    nodes: list[Node], sources_file: tuple[Path, LocalSite], db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    path, _ = sources_file
    env = _scheduler_env(nodes[:1], path)
    home = tmp_path / "sched"
    for name in ("alpha", "beta", "gamma", "delta"):
        harvest("--sources", str(path), "jobs", "pause", name, home=home, env=env)
    before = set(_jobs_of(nodes, "slow"))

    # Due ten hours ago (the scheduler was down): one run, next due in the future.
    db.execute("INSERT INTO schedules (source, next_due) VALUES "
               "('slow', now() - interval '10 hours')")
    harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    row = db.execute("SELECT next_due > now(), job_state FROM schedules "
                     "WHERE source = 'slow'").fetchone()
    assert row == (True, "submitted")
    assert len(set(_jobs_of(nodes, "slow")) - before) == 1

    # Due again while that job still runs (the site answers after 6 s): skipped, counted.
    db.execute("UPDATE schedules SET next_due = now() - interval '1 second' "
               "WHERE source = 'slow'")
    busy = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    # Said once, with the job's state (a bare warning on stderr said it a second time,
    # "pending" next to the report's "running").
    assert re.search(r"skipped slow: its previous job is still (pending|running)\n",
                     busy.stdout), busy.stdout
    assert "skipped this window" not in busy.stderr, busy.stderr
    manual = harvest("--sources", str(path), "jobs", "run", "slow", home=home, env=env)
    assert manual.returncode == 1 and "already has job" in manual.stderr
    assert db.execute("SELECT skipped_running FROM schedules WHERE source = 'slow'"
                      ).fetchone() == (1,)
    assert len(set(_jobs_of(nodes, "slow")) - before) == 1

    listing = harvest("--sources", str(path), "jobs", "list", home=home, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "slow" in listing.stdout and nodes[0].url in listing.stdout

    # Paused: due, yet not submitted; resumed: submitted.
    _wait_finished(nodes[0], list(set(_jobs_of(nodes, "slow")) - before))
    harvest("--sources", str(path), "jobs", "pause", "slow", home=home, env=env)
    db.execute("UPDATE schedules SET next_due = now() - interval '1 second'")
    harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    assert len(set(_jobs_of(nodes, "slow")) - before) == 1
    harvest("--sources", str(path), "jobs", "resume", "slow", home=home, env=env)
    resumed = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    assert "submitted slow" in resumed.stdout
    assert len(set(_jobs_of(nodes, "slow")) - before) == 2
    outcome = db.execute("SELECT last_outcome FROM schedules WHERE source = 'slow'").fetchone()
    assert outcome == ("succeeded",)


@pytest.mark.parametrize("user", ["", "ops"])  # an empty password: Scrapyd ran open
def test_scrapyd_will_not_start_without_credentials(tmp_path: Path, user: str) -> None:
    result = harvest("scrapyd", "start", home=tmp_path / "home",
                     env={"SCRAPYD_USERNAME": user, "SCRAPYD_PASSWORD": ""})
    assert result.returncode == 2
    assert "set SCRAPYD_USERNAME and a non-empty SCRAPYD_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_node_without_the_project_says_to_deploy_it(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # A fresh node (started with --no-deploy) was reported as "not reachable".
    port = free_port()
    env = {**CREDENTIALS, "SCRAPYD_HTTP_PORT": str(port),
           "HARVEST_SCRAPYD_URLS": f"http://127.0.0.1:{port}"}
    path = write_sources(tmp_path / "s.toml", [
        {"name": "due", "kind": "feed", "urls": ["http://127.0.0.1:9/f.xml"]}])
    node_home = tmp_path / "node"
    started = harvest("--sources", str(path), "scrapyd", "start", "--no-deploy",
                      home=node_home, env=env, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        result = harvest("--sources", str(path), "jobs", "run", "due", home=home, env=env)
        # `status` said "up" of a node the scheduler cannot use.
        status = harvest("scrapyd", "status", home=home, env=env)
    finally:
        harvest("scrapyd", "stop", home=node_home, env=env)
    says = (f"Scrapyd at http://127.0.0.1:{port} has no 'harvester' project yet; deploy it "
            "with `harvest scrapyd deploy`")
    assert result.returncode != 0
    assert says in result.stdout + result.stderr
    assert status.returncode == 1 and says in " ".join(status.stdout.split())
    assert f"down http://127.0.0.1:{port}" in status.stdout


def test_scheduler_once_fails_when_a_due_source_finds_no_node(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # For cron, --once exited 0 with every node down: nothing was submitted, and nothing said
    # so but a line on stdout.
    path = write_sources(tmp_path / "s.toml", [
        {"name": "due", "kind": "feed", "urls": ["http://127.0.0.1:9/f.xml"]}])
    env = {**CREDENTIALS, "HARVEST_SCRAPYD_URLS": f"http://127.0.0.1:{free_port()}"}
    result = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not submitted due: no Scrapyd node can take it (Scrapyd at " in result.stdout
    assert "is not reachable" in result.stdout


def test_a_job_on_a_node_that_does_not_answer_is_not_run_twice(
    nodes: list[Node], sources_file: tuple[Path, LocalSite], db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    # A job on a node that does not answer for a tick was marked "lost" and the source
    # submitted again elsewhere (or there, once it came back): two crawls of one source.
    path, _ = sources_file
    away = f"http://127.0.0.1:{free_port()}"
    env = {**_scheduler_env(nodes[:1], path),
           "HARVEST_SCRAPYD_URLS": f"{nodes[0].url},{away}"}
    home = tmp_path / "sched"
    for name in ("alpha", "beta", "gamma", "delta"):
        harvest("--sources", str(path), "jobs", "pause", name, home=home, env=env)
    before = set(_jobs_of(nodes, "slow"))
    db.execute("INSERT INTO schedules (source, next_due, job_id, job_node, job_state) VALUES "
               "('slow', now() - interval '1 second', 'slow.elsewhere', %s, 'submitted')",
               (away,))

    waited = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)

    assert f"skipped slow: its job slow.elsewhere is on {away}, which does not answer" in (
        " ".join(waited.stdout.split())), waited.stdout
    assert set(_jobs_of(nodes, "slow")) == before
    assert db.execute("SELECT job_state, skipped_running FROM schedules WHERE source = 'slow'"
                      ).fetchone() == ("submitted", 1)
    manual = harvest("--sources", str(path), "jobs", "run", "slow", home=home, env=env)
    assert manual.returncode == 1 and "which does not answer" in manual.stderr

    # Paused with a submission interrupted between its phases: it is dropped, not sent.
    db.execute("UPDATE schedules SET job_state = 'submitting', job_id = 'slow.interrupted', "
               "job_node = %s, paused = true", (nodes[0].url,))
    harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    assert set(_jobs_of(nodes, "slow")) == before
    assert db.execute("SELECT job_state FROM schedules WHERE source = 'slow'").fetchone() == (
        "not submitted",)


def test_an_edited_interval_applies_from_the_last_run_not_the_old_due_time(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Edited from 1d to 20s, a source waited for the due time its old interval had set.
    path = write_sources(tmp_path / "s.toml", [
        {"name": "edited", "kind": "feed", "interval": "20s",
         "urls": ["http://127.0.0.1:9/f.xml"]}])
    db.execute("INSERT INTO schedules (source, next_due, job_due, planned_for) VALUES "
               "('edited', now() + interval '1 day', now() - interval '1 hour', 'every 1d')")
    env = {**CREDENTIALS, "HARVEST_SCRAPYD_URLS": f"http://127.0.0.1:{free_port()}"}
    result = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    # Due now (its last run was an hour ago): it looked for a node, and there is none.
    assert result.returncode == 1 and "not submitted edited" in result.stdout, result.stdout
    row = db.execute("SELECT next_due <= now(), planned_for FROM schedules").fetchone()
    assert row == (True, "every 20s")
    # Unchanged, the stored due time stands.
    db.execute("UPDATE schedules SET next_due = now() + interval '1 day'")
    calm = harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    assert calm.returncode == 0 and "edited" not in calm.stdout, calm.stdout


def test_start_on_a_port_another_server_holds_is_refused(nodes: list[Node],
                                                         tmp_path: Path) -> None:
    # Scrapyd exited at once ("Address already in use") and the other server's answer
    # passed for it: "Scrapyd running at …", exit 0, and the egg went to the other one.
    result = harvest("scrapyd", "start", "--no-deploy", home=tmp_path / "other",
                     env={**CREDENTIALS, "SCRAPYD_HTTP_PORT": str(nodes[0].port)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert (f"cannot start Scrapyd at {nodes[0].url}: port {nodes[0].port} is in use"
            in " ".join(result.stderr.split()))
    assert not (tmp_path / "other" / "scrapyd" / "scrapyd.pid").exists()


def test_a_pid_file_naming_another_process_is_not_our_scrapyd(tmp_path: Path) -> None:
    # A Scrapyd gone long ago left its pid file, and its number came back as another
    # process (a group leader: a shell, a daemon): `harvest scrapyd stop` killed that
    # process group, `status`-like checks said "Scrapyd running (pid …)".
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    home = tmp_path / "home"
    (home / "scrapyd").mkdir(parents=True)
    (home / "scrapyd" / "scrapyd.pid").write_text(str(other.pid))
    try:
        stopped = harvest("scrapyd", "stop", home=home, env=CREDENTIALS)
        assert stopped.returncode == 0 and stopped.stdout.strip() == "not running", (
            stopped.stdout + stopped.stderr)
        assert other.poll() is None  # alive: not ours to stop
        assert not (home / "scrapyd" / "scrapyd.pid").exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("command", ["stop", "start"])
def test_stop_ends_the_jobs_of_a_scrapyd_that_was_killed(tmp_path: Path, command: str) -> None:
    # Scrapyd killed: its jobs ran on in its process group, `harvest scrapyd stop` said
    # "not running", and no harvest command could stop them; `start` (the runbook's
    # answer to "Scrapyd is down") started a new one beside them, which listed none of
    # them, so the scheduler crawled their sources a second time. The group here is what
    # `harvest scrapyd start` leaves (a session leader whose pid it records, and a job
    # process under it), without the cost of a Scrapyd and a deploy.
    home = tmp_path / "home"
    (home / "scrapyd").mkdir(parents=True)
    env = {**CREDENTIALS, "SCRAPYD_HTTP_PORT": str(free_port())}
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True,
                              cwd=home / "scrapyd")  # Scrapyd and its jobs run there
    try:
        (home / "scrapyd" / "scrapyd.pid").write_text(str(leader.pid))
        deadline = time.monotonic() + 10
        while len(_group(leader.pid)) < 2:  # the "job" has started
            assert time.monotonic() < deadline, "the job process did not start"
            time.sleep(0.05)
        leader.kill()
        leader.wait()
        assert _group(leader.pid)  # the leader gone, its job still running

        done = harvest("scrapyd", command, *(["--no-deploy"] if command == "start" else []),
                       home=home, env=env)

        said = " ".join(done.stdout.split())
        if command == "stop":
            assert said == "stopped", done.stdout + done.stderr
        else:
            assert said.startswith("stopped the jobs a Scrapyd that was killed left running")
            assert "Scrapyd running at" in said, done.stdout + done.stderr
        assert _group(leader.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        if command == "start":
            harvest("scrapyd", "stop", home=home, env=env)


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies are not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def test_a_job_run_by_hand_for_a_source_off_in_the_file_gets_its_outcome(
    nodes: list[Node], db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # The scheduler skipped `enabled = false` sources before looking at their jobs: a job
    # `harvest jobs run` started for one stayed "submitted" with no outcome for good.
    path = write_sources(tmp_path / "s.toml", [
        {"name": "handrun", "kind": "feed", "enabled": False,
         "urls": ["http://127.0.0.1:9/f.xml"]}])
    env = {**CREDENTIALS, "HARVEST_SCRAPYD_URLS": nodes[0].url}
    started = harvest("--sources", str(path), "jobs", "run", "handrun", home=home, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    job = db.execute("SELECT job_id FROM schedules WHERE source = 'handrun'").fetchone()[0]
    _wait_finished(nodes[0], [job])
    # Its outcome is listed before a scheduler's pass (the job before's was, or "-").
    listed = harvest("--sources", str(path), "jobs", "list", home=home, env=env)
    [row] = [ln.split("│") for ln in listed.stdout.splitlines() if "handrun" in ln]
    harvest("--sources", str(path), "scheduler", "--once", home=home, env=env)
    state, outcome = db.execute("SELECT job_state, last_outcome FROM schedules "
                                "WHERE source = 'handrun'").fetchone()
    assert state == "finished" and outcome, (state, outcome)
    assert row[9].strip() == outcome, listed.stdout
    # A finished job that recorded no run (killed by the OOM killer, cancelled before it
    # started) showed the job before's outcome until a scheduler's pass: "succeeded".
    db.execute("UPDATE schedules SET job_state = 'submitted', last_outcome = 'succeeded' "
               "WHERE source = 'handrun'")
    db.execute("DELETE FROM crawl_runs WHERE job_id = %s", (job,))
    listed = harvest("--sources", str(path), "jobs", "list", home=home, env=env)
    [row] = [ln.split("│") for ln in listed.stdout.splitlines() if "handrun" in ln]
    assert row[9].strip() == "finished (no run recorded)", listed.stdout
    # Disabled after failing: "submitted", exit 0, and a job that skipped it doing nothing.
    db.execute("INSERT INTO sources_state (source, consecutive_failures, disabled) "
               "VALUES ('handrun', 5, true) ON CONFLICT (source) DO UPDATE "
               "SET consecutive_failures = 5, disabled = true")
    refused = harvest("--sources", str(path), "jobs", "run", "handrun", home=home, env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert " ".join(refused.stderr.split()) == (
        "error: handrun is disabled after 5 failed runs in a row, so a job would skip it; "
        "re-enable it with `harvest sources enable handrun`")
    assert db.execute("SELECT job_id FROM schedules WHERE source = 'handrun'"
                      ).fetchone()[0] == job


@pytest.mark.parametrize(("counters", "errors", "outcome"), [
    ({"fetched": 0, "errors": 1}, 1, "failed, 1 errors"),
    ({"fetched": 3, "entries": 30, "errors": 1}, 1, "partly failed, 1 errors"),
    ({"skipped": "disabled after 5 failed runs in a row"}, 0, "skipped"),
    ({"fetched": 1, "entries": 10}, 0, "succeeded"),
])
def test_a_jobs_outcome_is_the_runs_own_verdict(
    db: psycopg.Connection[Any], counters: dict[str, Any], errors: int, outcome: str
) -> None:
    # `jobs list` and the scheduler showed Scrapy's finish reason: "finished, 1 errors" of a
    # failed run and of a partly failed one alike, "finished" of one that skipped its source.
    db.execute("INSERT INTO crawl_runs (id, spider, sources, job_id, started_at, finished_at, "
               "finish_reason, errors, stats) VALUES (gen_random_uuid(), 'feed', '{src}', "
               "'src.manual.1', now(), now(), 'finished', %s, %s)",
               (errors, Jsonb({"harvest/by_source": {"src": counters}})))
    assert scheduler._outcome(db, "src.manual.1") == outcome
