"""``harvest serve``: the HTTP API on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import click
import psycopg

from harvester.cli import console, err, friendly, main
from harvester.config import get_config
from harvester.messages import first_line
from harvester.services import database


@main.command("serve")
@click.option("--host", default=None, help="Address to bind (default $HARVEST_API_HOST or "
                                           "127.0.0.1; 0.0.0.0 only behind a firewall).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port (default $HARVEST_API_PORT or 8000).")
@click.pass_context
@friendly
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the API until stopped (Ctrl-C or SIGTERM): signals, sources, runs, briefs,
    curator POSTs, /health, /metrics; OpenAPI docs at /docs."""
    import uvicorn

    from harvester.api.app import create_app
    from harvester.api.settings import get_api_settings

    config = get_config()
    get_api_settings()  # a wrong HARVEST_API_* is one sentence now, not after "serving on"
    url = database.resolve_url(config)
    try:
        database.ensure_schema(url)
    except psycopg.OperationalError as exc:
        if not config.database_url:
            raise  # our own embedded server answered resolve_url(): this is not an outage
        # A service must answer while its database is down: /health says 503 and why, and
        # tells to migrate if the schema is behind once the server is back.
        err.print(f"[yellow]warning:[/] the database {database.describe_url(url)} is "
                  f"unreachable ({first_line(exc)}); serving anyway: /health answers 503 "
                  "until it is back", highlight=False)
    host = host or config.api_host
    port = port or config.api_port
    console.print(f"serving on http://{host}:{port} (database {database.describe_url(url)})",
                  highlight=False)
    uvicorn.run(create_app(url, ctx.obj["sources"]), host=host, port=port, log_level="warning",
                server_header=False, proxy_headers=False)
