"""``harvest serve``: the HTTP API on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import socket
import sys

import click
import psycopg

from harvester.cli import EXIT_USAGE, console, err, friendly, main
from harvester.config import get_config
from harvester.messages import first_line
from harvester.services import database
from harvester.services.urls import is_loopback


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
    api = get_api_settings()  # a wrong HARVEST_API_* is one sentence now, not after "serving on"
    host = host or api.host
    port = port or api.port
    sock = _listen(host, port)  # before "serving on": a port in use is one sentence
    url = database.resolve_url(config)
    try:
        database.ensure_schema(url)
    except (psycopg.OperationalError, database.DatabaseUnavailable) as exc:
        if not config.database_url and not isinstance(exc, database.SchemaUnknown):
            raise  # our own embedded server answered resolve_url(): this is not an outage
        # A service must answer while its database is down (or at a newer harvest's schema):
        # /health says 503 and why, and tells to migrate if the schema is behind once the
        # server is back.
        err.print(f"[yellow]warning:[/] the database {database.describe_url(url)} cannot be "
                  f"used ({first_line(exc)}); serving anyway: /health answers 503 until it "
                  "is fixed", highlight=False)
    if not api.read_keys and not is_loopback(host):
        err.print(f"[yellow]warning:[/] reads are open to anyone who reaches {host}:{port} "
                  "(HARVEST_API_KEYS is not set); set it, or serve on 127.0.0.1",
                  highlight=False)
    shown_host = f"[{host}]" if ":" in host else host  # IPv6: http://[::1]:8000
    console.print(f"serving on http://{shown_host}:{port} (database "
                  f"{database.describe_url(url)})",
                  highlight=False)
    server = uvicorn.Server(uvicorn.Config(
        create_app(url, ctx.obj["sources"]), host=host, port=port, log_level="warning",
        server_header=False, proxy_headers=False))
    server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """The bound socket uvicorn serves on, or exit 2 with one sentence (uvicorn's own
    report of a port in use came after "serving on", as an ERROR line and exit 3)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        fix = ("choose another --host (HARVEST_API_HOST)" if isinstance(exc, socket.gaierror)
               else "stop what uses it or choose another --port (HARVEST_API_PORT)")
        err.print(f"[red]error:[/] cannot listen on {host}:{port} "
                  f"({exc.strerror or exc}); {fix}", highlight=False)
        sys.exit(EXIT_USAGE)
    return sock

