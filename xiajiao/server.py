"""Serving the app with Hypercorn: pre-flight checks, signals, graceful shutdown."""
from __future__ import annotations

import asyncio
import errno
import signal
import socket
import sys

from .errors import StartupError
from .settings import Settings


def check_port(host: str, port: int) -> None:
    """Fail with a clear message when the port is taken (never touches the other program)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise StartupError(
                f"port {port} on {host} is already in use by another program; "
                f"set XIAJIAO_PORT to a free port (for example XIAJIAO_PORT={port + 1})."
            ) from None
        raise StartupError(f"cannot listen on {host}:{port} ({exc.strerror}); change XIAJIAO_HOST or XIAJIAO_PORT.") from None
    finally:
        sock.close()


async def preflight(app) -> None:
    """Open and migrate the database before serving, so errors surface as one clear line.

    It stays open: the app's start finds it ready (same event loop) instead of opening it again.
    """
    core = app.xj
    core._check_data_dir()
    await core.db.open()


async def serve(settings: Settings, *, ready=None) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from .app import create_app
    from .logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    check_port(settings.host, settings.port)
    app = create_app(settings)
    await preflight(app)

    config = Config()
    config.bind = [f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_timeout
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = settings.log_level

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C raises KeyboardInterrupt instead
            pass

    @app.before_serving
    async def _banner() -> None:
        print(f"Xiajiao {app.xj.version} serving on http://{settings.host}:{settings.port}  "
              f"(data: {settings.data_dir})", file=sys.stdout, flush=True)
        if ready is not None:
            ready.set()

    async def shutdown_trigger() -> None:
        await stop.wait()
        await app.xj.quiesce()  # sockets first: Hypercorn then waits only for requests to finish

    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)
