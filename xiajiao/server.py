"""Serving the app with Hypercorn: pre-flight checks, signals, graceful shutdown."""
from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
import threading
import time
import traceback

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


class _SlowCallbacks(logging.Filter):
    """Marks asyncio's "Executing <handle> took N seconds" warnings (debug mode) so they can be found."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Executing "):
            record.msg = "slow callback: " + record.msg
        return True


def watch_loop(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """asyncio debug mode: every callback holding the loop longer than ``seconds`` is logged as a warning.

    asyncio names only the task; a watchdog thread also logs where the loop's thread is while a
    callback holds it (a heartbeat on the loop that is late by ``seconds``), so the culprit is found.
    """
    loop.set_debug(True)
    loop.slow_callback_duration = seconds
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _SlowCallbacks) for f in logger.filters):
        logger.addFilter(_SlowCallbacks())
    beat = [time.monotonic()]

    def heartbeat() -> None:
        beat[0] = time.monotonic()
        loop.call_later(seconds / 5, heartbeat)

    loop.call_soon(heartbeat)
    loop_thread = threading.get_ident()

    def watchdog() -> None:
        reported = 0.0
        while not loop.is_closed():
            time.sleep(seconds / 5)
            last = beat[0]
            if time.monotonic() - last > seconds and last != reported:
                reported = last
                frame = sys._current_frames().get(loop_thread)  # noqa: SLF001 (the only way to see another thread)
                if frame is not None:
                    stack = " <- ".join(f"{f.filename}:{f.lineno} {f.name}"
                                        for f in reversed(traceback.extract_stack(frame)[-14:]))
                    logging.getLogger("xiajiao.loop").warning("loop held; its thread is at: %s", stack)

    threading.Thread(target=watchdog, name="loop-watchdog", daemon=True).start()


async def serve(settings: Settings, *, ready=None) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from .app import create_app
    from .logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    if settings.loop_slow_ms > 0:
        watch_loop(asyncio.get_running_loop(), settings.loop_slow_ms / 1000)
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

    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)
