"""``harvest scrapyd …``: a local Scrapyd for this project (start, stop, status, deploy)."""

from __future__ import annotations

import sys

import click

from harvester.cli import EXIT_FAILED, _sources_path, console, friendly, main
from harvester.config import get_config
from harvester.messages import shown
from harvester.services import scrapyd as scrapyd_api
from harvester.services import scrapydproc


@main.group()
def scrapyd() -> None:
    """Run Scrapyd for this project under $HARVEST_HOME/scrapyd (auth from SCRAPYD_USERNAME
    and SCRAPYD_PASSWORD; address from SCRAPYD_BIND_ADDRESS/SCRAPYD_HTTP_PORT)."""


@scrapyd.command("start")
@click.option("--deploy/--no-deploy", default=True, show_default=True,
              help="Deploy the project egg once Scrapyd answers.")
@click.pass_context
@friendly
def scrapyd_start(ctx: click.Context, deploy: bool) -> None:
    """Start Scrapyd in the background with what jobs need (database, the sources file:
    `harvest --sources PATH`, else $HARVEST_SOURCES or ./sources.toml)."""
    config = get_config().model_copy(update={"sources": _sources_path(ctx)})
    if scrapydproc.stop_left_jobs(config):
        console.print("stopped the jobs a Scrapyd that was killed left running (a new one "
                      "would not list them, and their sources would be crawled twice)",
                      highlight=False)
    pid, node = scrapydproc.start(config)
    console.print(f"Scrapyd running at {node.url} (pid {pid}), data in "
                  f"{scrapydproc.Paths.of(get_config()).root}", highlight=False)
    if deploy:
        _deploy([node])


@scrapyd.command("stop")
@friendly
def scrapyd_stop() -> None:
    """Stop the Scrapyd started by `harvest scrapyd start` (running jobs are stopped too)."""
    stopped = scrapydproc.stop(get_config())
    console.print("stopped" if stopped else "not running", highlight=False)


@scrapyd.command("status")
@friendly
def scrapyd_status() -> None:
    """Each configured node (HARVEST_SCRAPYD_URLS): up with its load, or down (not answering,
    or without the project, which the scheduler cannot use either); exit 1 if any is down."""
    down = 0
    for node in scrapyd_api.nodes():
        try:
            status = node.status()
            node.jobs()  # the project is there: what the scheduler asks each pass
        except scrapyd_api.ScrapydError as exc:
            down += 1
            console.print(f"[red]down[/] {node.url}: {shown(exc)}", highlight=False)
            continue
        console.print(f"[green]up[/] {node.url}: {status.get('running', 0)} running, "
                      f"{status.get('pending', 0)} pending, {status.get('finished', 0)} "
                      "finished", highlight=False)
    if down:
        sys.exit(EXIT_FAILED)


@scrapyd.command("deploy")
@friendly
def scrapyd_deploy() -> None:
    """Build the project egg (scrapyd-deploy --build-egg) and upload it to every node."""
    _deploy(scrapyd_api.nodes())


def _deploy(nodes: list[scrapyd_api.Node]) -> None:
    failed = False
    for url, outcome in scrapydproc.deploy(nodes).items():
        if isinstance(outcome, int):
            console.print(f"deployed harvester to {url}: {outcome} spiders", highlight=False)
        else:
            failed = True
            console.print(f"[red]not deployed[/] to {url}: {shown(outcome)}", highlight=False)
    if failed:
        sys.exit(EXIT_FAILED)
