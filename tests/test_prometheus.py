"""The Prometheus and Grafana files in deploy/: promtool accepts the configs and rules and
passes the rules' unit tests; the dashboard and the rules use only metrics harvester
exports; and a real Prometheus (Debian's package) on loopback scrapes `harvest serve` after
two concurrent Scrapyd jobs and sums the items they stored."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from harvester.services.localsite import LocalSite
from tests.conftest import ROOT, free_port, write_sources
from tests.feeds import items, rss
from tests.scrapydnode import CREDENTIALS, Node

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus-compose.yml"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "harvester.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# The metrics contract (docs/observability.md): what crawl processes and `harvest serve`
# export. A histogram is read through its _bucket, _sum and _count series.
COUNTERS = {
    "harvest_items_scraped_total", "harvest_items_stored_total", "harvest_items_reseen_total",
    "harvest_items_duplicates_total", "harvest_items_rejected_total",
    "harvest_fields_dropped_total",
    "harvest_items_spooled_total", "harvest_items_lost_total", "harvest_http_responses_total",
    "harvest_retries_total",
    "harvest_rate_limit_waits_total", "harvest_rate_limit_wait_seconds_total",
    "harvest_crawl_errors_total", "harvest_runs_total",
}
HISTOGRAMS = {"harvest_run_duration_seconds"}
GAUGES = {
    "harvest_database_up", "harvest_signals", "harvest_source_last_success_timestamp_seconds",
    "harvest_source_interval_seconds", "harvest_source_disabled", "harvest_sources_file_readable",
    "harvest_spool_pending_batches", "harvest_spool_set_aside_files",
    "harvest_notifications_pending",
    "harvest_notifications_failed", "harvest_scrapyd_node_up",
}
PROMETHEUS_OWN = {"up"}  # written by Prometheus for every target
KNOWN_METRICS = (COUNTERS | GAUGES | PROMETHEUS_OWN
                 | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")})

E2E_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 120.0

needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).is_file(),
    reason="promtool is missing: install Debian's prometheus package (apt-get install prometheus)",
)
needs_prometheus = pytest.mark.skipif(
    not Path(PROMETHEUS).is_file(),
    reason="prometheus is missing: install Debian's prometheus package "
           "(apt-get install prometheus)",
)


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


# --- PromQL: which metric names an expression reads ---------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
             "by", "without", "on", "ignoring", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: identifiers that are not functions, aggregations,
    keywords, label names (inside braces or grouping lists) or durations."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def test_metric_names_finds_metrics_and_only_metrics() -> None:
    expr = ('histogram_quantile(0.95, sum by (source, le) (rate('
            'harvest_run_duration_seconds_bucket{source=~"$source", le!="+Inf"}[$__rate_interval]'
            '))) / on (source) group_left harvest_source_interval_seconds offset 1h '
            'and time() - harvest_items_storred_total > 3e2 or vector(0)')
    assert metric_names(expr) == {"harvest_run_duration_seconds_bucket",
                                  "harvest_source_interval_seconds",
                                  "harvest_items_storred_total"}


# --- (a) promtool ---------------------------------------------------------------------------

@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout), result.stdout


@needs_promtool
@pytest.mark.parametrize("config", [CONFIG, COMPOSE_CONFIG], ids=lambda p: p.name)
def test_configs_pass_promtool_check(config: Path) -> None:
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def _without_comments(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_host_and_compose_configs_differ_only_in_the_target() -> None:
    host, compose = _without_comments(CONFIG), _without_comments(COMPOSE_CONFIG)
    changed = [(a, b) for a, b in zip(host, compose, strict=True) if a != b]
    assert changed == [('      - targets: ["127.0.0.1:8000"]', '      - targets: ["api:8000"]')]
    assert "  scrape_interval: 15s" in host and "  - rules.yml" in host


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _rule_blocks() -> list[str]:
    """rules.yml cut into one text block per alerting rule."""
    text = RULES.read_text(encoding="utf-8")
    starts = [m.start() for m in re.finditer(r"^ {6}- alert: ", text, re.MULTILINE)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def test_every_alert_has_a_severity_names_a_command_and_is_unit_tested() -> None:
    blocks = _rule_blocks()
    assert len(blocks) >= 9
    tests = RULES_TEST.read_text(encoding="utf-8")
    for block in blocks:
        name = re.match(r" *- alert: (\w+)", block)
        assert name, block
        alert = name.group(1)
        assert re.search(r"^ +severity: (critical|warning)$", block, re.MULTILINE), alert
        assert "summary:" in block and "description:" in block, alert
        description = block.split("description:", 1)[1]
        assert re.search(r"`(harvest|curl) [^`]+`", description), alert
        expr = block.split("expr:", 1)[1].split("for:")[0].split("labels:")[0]
        if re.search(r"\bsource\b", expr):
            assert "{{ $labels.source }}" in description, alert
        # Each alert is shown both firing and not firing in rules_test.yml.
        cases = re.findall(rf"alertname: {alert}\n +exp_alerts:( \[\])?", tests)
        assert "" in cases and " []" in cases, f"{alert}: fires and stays quiet in a test"


@pytest.mark.parametrize("block", _rule_blocks(), ids=lambda b: b.split()[2])
def test_rules_use_only_exported_metrics(block: str) -> None:
    expr = block.split("expr:", 1)[1].split("\n        for:")[0].split("\n        labels:")[0]
    assert metric_names(expr), expr
    assert metric_names(expr) <= KNOWN_METRICS, metric_names(expr) - KNOWN_METRICS


# --- (b) the Grafana dashboard ----------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # inside a collapsed row
    return found


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and of the query variables."""
    queries = [(panel["title"], target["expr"]) for panel in _panels(dashboard)
               for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            values = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            queries.append((f"${variable['name']}", values.group(1) if values else query))
    return queries


def test_dashboard_is_a_provisionable_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "harvester-overview"
    assert isinstance(dashboard["schemaVersion"], int) and 36 <= dashboard["schemaVersion"] <= 42
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
            assert panel["datasource"]["type"] == "prometheus"
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("stored", "re-seen", "rejected", "since last success", "notifications pending",
                  "notifications failed", "run duration", "http", "rate-limit"):
        assert topic in titles, topic
    provisioning = (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "url: http://prometheus:9090" in provisioning
    assert "uid: harvester-prometheus" in provisioning
    assert dashboard["templating"]["list"][0]["current"]["value"] == "harvester-prometheus"
    provider = (GRAFANA_DIR / "provisioning" / "dashboards" / "harvester.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider  # where compose mounts dashboards/


def test_dashboard_uses_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for title, expr in _queries(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: {expr}"
        assert names <= KNOWN_METRICS, f"{title}: unknown {sorted(names - KNOWN_METRICS)}"
        used |= names
    # Every crawl counter and serve gauge is on the dashboard somewhere.
    assert (COUNTERS | GAUGES) - used == set()


@needs_promtool
def test_dashboard_queries_parse_as_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced) as a recording rule."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, expr) in enumerate(_queries(dashboard)):
        promql = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
        promql = re.sub(r"\$\{?\w+\}?", ".*", promql)
        lines += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(promql)}"]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- (c) a real Prometheus scrapes `harvest serve` after two concurrent Scrapyd jobs ------

def _render_config(path: Path, target: str) -> Path:
    """deploy/prometheus/prometheus.yml with a 1 s scrape, the test's target and rules.yml
    by absolute path. Each replaced line must be there once: a reshaped config fails here."""
    text = CONFIG.read_text(encoding="utf-8")
    for old, new in (("  scrape_interval: 15s", "  scrape_interval: 1s"),
                     ("  evaluation_interval: 15s", "  evaluation_interval: 1s"),
                     ("  - rules.yml", f"  - {RULES}"),
                     ('["127.0.0.1:8000"]', f'["{target}"]')):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Prometheus:
    url: str
    serve_port: int

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": promql},
                                timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer in {timeout:.0f} s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Debian's Prometheus on loopback with deploy/'s config (1 s scrape) and rules; its
    target, a `harvest serve` port, is chosen now and started by the test."""
    if not Path(PROMETHEUS).is_file():
        pytest.skip("prometheus is missing: install Debian's prometheus package")
    base = tmp_path_factory.mktemp("prometheus")
    serve_port, port = free_port(), free_port()
    config = _render_config(base / "prometheus.yml", f"127.0.0.1:{serve_port}")
    log = base / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={base / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/-/ready", process, log, timeout=30)
        yield Prometheus(url, serve_port)
    finally:
        _stop(process)


@needs_prometheus
def test_prometheus_loads_every_rule(prometheus: Prometheus) -> None:
    body = requests.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
    rules = [r for group in body["data"]["groups"] for r in group["rules"]]
    assert len(rules) == len(_rule_blocks())
    assert all(r["health"] in ("ok", "unknown") for r in rules), rules
    assert {r["labels"]["severity"] for r in rules} == {"critical", "warning"}


FEEDS = {"east": 4, "west": 3}


def _scrapyd_times(job: dict[str, Any]) -> tuple[datetime, datetime]:
    return (datetime.fromisoformat(str(job["start_time"])),
            datetime.fromisoformat(str(job["end_time"])))


def _run_two_concurrent_jobs(node: Node) -> None:
    jobs = [node.api("schedule.json", project="harvester", spider="feed", source=name)["jobid"]
            for name in FEEDS]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        finished = {j["id"]: j for j in node.jobs()["finished"]}
        if set(jobs) <= set(finished):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"jobs {jobs} did not finish on {node.url} in {JOB_TIMEOUT_S:.0f} s")
    (start_a, end_a), (start_b, end_b) = (_scrapyd_times(finished[j]) for j in jobs)
    assert max(start_a, start_b) < min(end_a, end_b), "the two jobs did not overlap"


@needs_prometheus
def test_prometheus_sums_what_two_concurrent_scrapyd_jobs_stored(
    prometheus: Prometheus, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"  # shared by the Scrapyd jobs and `harvest serve`
    root = tmp_path / "site"
    root.mkdir()
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    for name, count in FEEDS.items():
        (root / f"{name}.xml").write_text(rss(items(name, count)))
    with LocalSite(root) as site:
        for name in FEEDS:
            site.set_delay(f"/{name}.xml", 3.0)  # long enough for the two jobs to overlap
        sources = write_sources(tmp_path / "sources.toml", [
            {"name": name, "kind": "feed", "interval": "1h", "urls": [f"{site.url}/{name}.xml"]}
            for name in FEEDS])
        env = {**CREDENTIALS, "SCRAPYD_HTTP_PORT": str(free_port()),
               "HARVEST_SOURCES": str(sources), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        node = Node(tmp_path / "scrapyd-home", int(env["SCRAPYD_HTTP_PORT"]), env)
        serve: subprocess.Popen[bytes] | None = None
        try:
            node.start()
            _run_two_concurrent_jobs(node)
            stored = db.execute("SELECT count(*) FROM signals WHERE source = ANY(%s)",
                                (list(FEEDS),)).fetchone()
            assert stored == (sum(FEEDS.values()),)

            log = tmp_path / "serve.log"
            serve_env = {**os.environ, **env, "HARVEST_HOME": str(node.home),
                         "HARVEST_SCRAPYD_URLS": node.url}
            with log.open("wb") as out:
                serve = subprocess.Popen(
                    [sys.executable, "-m", "harvester.cli", "serve",
                     "--port", str(prometheus.serve_port)],
                    cwd=ROOT, env=serve_env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            _wait_http(f"http://127.0.0.1:{prometheus.serve_port}/health", serve, log, 30)
            _wait_for_sum(prometheus, stored[0])
            per_source = {r["metric"]["source"]: float(r["value"][1]) for r in
                          prometheus.query("sum by (source) (harvest_items_stored_total)")}
            assert per_source == {name: float(count) for name, count in FEEDS.items()}
        finally:
            if serve is not None:
                _stop(serve)
            node.stop()


def _wait_for_sum(prometheus: Prometheus, expected: int) -> None:
    deadline = time.monotonic() + E2E_TIMEOUT_S
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        last = prometheus.query("sum(harvest_items_stored_total)")
        if last and float(last[0]["value"][1]) == expected:
            return
        time.sleep(0.5)
    pytest.fail(f"Prometheus never returned {expected} for sum(harvest_items_stored_total) in "
                f"{E2E_TIMEOUT_S:.0f} s; last answer: {last}")
