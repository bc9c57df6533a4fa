"""``aggregator serve``: read the history in a browser (read-only, live)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import click

from aggregator.cli.common import (
    common_options,
    configure_logging,
    database_location,
    fail,
    found_config,
    handles_errors,
)

if TYPE_CHECKING:
    from aggregator.config import Config
    from aggregator.digest.image import ImageSettings

TOKEN_ENV = "AGGREGATOR_SERVE_TOKEN"  # noqa: S105 - the variable's name, not a token


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each accepted connection (it checks
    # the proto): without it a response's second write waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _pictures(config: Config, database: str) -> ImageSettings | None:
    """Diff picture settings, or None (logged) when no Chromium is installed."""
    import structlog

    from aggregator.digest.image import image_settings
    from aggregator.errors import ConfigError

    storage = config.storage.model_copy(update={"database": database})
    try:
        return image_settings(config.model_copy(update={"storage": storage}))
    except ConfigError as exc:
        structlog.get_logger("aggregator.web").info("serve.no_pictures", reason=str(exc))
        return None


def _defaults() -> Config:
    from aggregator.config import Config

    return Config()


@click.command("serve")
@common_options
@click.option("--host", default=None, help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="[default: 8080]")
@click.option(
    "--behind-proxy",
    is_flag=True,
    default=None,
    help="A reverse proxy in front authenticates (allows a non-loopback --host without a"
    " token; trusts its X-Forwarded-* headers).",
)
@click.option("--root-path", default=None, help="Path prefix the proxy serves this under.")
@handles_errors
def serve_command(
    host: str | None,
    port: int | None,
    behind_proxy: bool | None,
    root_path: str | None,
) -> None:
    """Read the history in a browser: changes, stories, sources, search, live.

    Read-only: it opens the database read-only and is safe while `aggregator run`
    writes. Listens on 127.0.0.1:8080 unless told otherwise; a non-loopback
    --host needs a token ([serve] token or token_env, or $AGGREGATOR_SERVE_TOKEN)
    or --behind-proxy.
    """
    import signal

    import structlog
    import uvicorn

    from aggregator.config import Config
    from aggregator.store.queries import Reader
    from aggregator.web import Settings, create_app
    from aggregator.web.security import is_loopback

    configure_logging()
    config = found_config()
    serve = (config or Config()).serve
    path = database_location("read", config=config)
    host = host or serve.host
    port = serve.port if port is None else port
    proxy = serve.behind_proxy if behind_proxy is None else behind_proxy
    root = (serve.root_path if root_path is None else root_path).rstrip("/")
    try:
        token = serve.resolved_token() or os.environ.get(TOKEN_ENV) or None
    except ValueError as exc:
        fail(str(exc), code=2)
        raise  # unreachable
    if not is_loopback(host) and not token and not proxy:
        fail(
            f"refusing to serve the history on {host} without a token: set [serve] token"
            f" (or token_env, or ${TOKEN_ENV}), or put a reverse proxy that authenticates"
            " in front and pass --behind-proxy (the manual: docs/web.md)",
            code=2,
        )
    Reader.open(path).close()  # exists, is ours, migrated forward
    tags: dict[str, list[str]] = {}
    for source in config.sources if config else []:
        for tag in source.tags:
            tags.setdefault(tag, []).append(source.name)
    settings = Settings(
        database=str(path),
        root_path=root,
        token=token,
        check_host=not token and not proxy,
        live_interval=serve.live_interval,
        tags=tags,
        images=_pictures(config or _defaults(), str(path)),
    )
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    structlog.get_logger("aggregator.web").info(
        "serve.started",
        url=url,
        database=str(path),
        auth="token" if token else "proxy" if proxy else "loopback",
        root_path=root,
    )
    under = f" (links under {root}/ for the proxy)" if root else ""
    click.echo(f"Serving {path} read-only on {url}{under}  (Ctrl-C to stop)", err=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=proxy,
            forwarded_allow_ips=serve.forwarded_allow_ips if proxy else None,
            root_path=root,
            timeout_graceful_shutdown=3,
            lifespan="on",
        )
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for
    # the handler found before it: a no-op here, so a stop by signal exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    structlog.get_logger("aggregator.web").info("serve.stopped")


COMMANDS = [serve_command]
