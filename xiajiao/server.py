"""Serving the app with Hypercorn: pre-flight checks, signals, graceful shutdown."""
from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

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


def watch_loop(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Log every callback that holds the event loop for more than ``seconds`` of CPU (setting loop_slow_ms).

    Like asyncio's debug mode (``slow_callback_duration``), but timed in the loop thread's CPU time, so a
    busy machine descheduling the process is not reported, and without debug mode's traceback per
    callback. A watchdog thread samples where the loop's thread is while a callback runs long, so the
    warning names the culprit, not only the task.
    """
    log = logging.getLogger("xiajiao.loop")
    state: dict[str, Any] = {"start": 0.0, "running": False, "stack": None, "gc": 0.0, "gc0": 0.0}

    def collecting(phase: str, info: dict) -> None:  # the garbage collector runs inside whatever callback is current
        if phase == "start":
            state["gc0"] = time.thread_time()
        else:
            state["gc"] += time.thread_time() - state["gc0"]

    gc.callbacks.append(collecting)
    run = asyncio.events.Handle._run  # noqa: SLF001 (the one place every callback of the loop goes through)

    def timed(handle: asyncio.Handle) -> None:
        state.update(start=time.monotonic(), running=True, stack=None, gc=0.0)
        modules = len(sys.modules)
        cpu0 = time.thread_time()
        try:
            run(handle)
        finally:
            state["running"] = False
            cpu = time.thread_time() - cpu0
            if cpu > seconds:
                imported = len(sys.modules) - modules  # sys.modules keeps insertion order: the newest are last
                log.warning("slow callback: %s held the event loop for %.0f ms of CPU (%.0f ms in all, %.0f ms of "
                            "it collecting garbage); at: %s%s",
                            describe(handle), cpu * 1000, (time.monotonic() - state["start"]) * 1000,
                            state["gc"] * 1000, state["stack"] or "(not sampled)",
                            f"; imported {imported} modules: {', '.join(list(sys.modules)[-imported:][:20])}"
                            if imported > 0 else "")

    def describe(handle: asyncio.Handle) -> str:
        """The handle, and for a task's step the task's coroutine and where it waits now (just after the work)."""
        text = repr(handle)[:300]
        task = getattr(getattr(handle, "_callback", None), "__self__", None)
        if isinstance(task, asyncio.Task):
            coro: Any = task.get_coro()
            frames: list[str] = []
            while coro is not None and len(frames) < 14:
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                if frame is None:
                    break
                frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            text += f" task {task.get_name()} now at " + (" -> ".join(frames) or "(done)")
        return text

    asyncio.events.Handle._run = timed  # type: ignore[method-assign, assignment]  # noqa: SLF001
    loop_thread = threading.get_ident()

    def watchdog() -> None:
        while not loop.is_closed():
            time.sleep(seconds / 4)
            started = state["start"]
            if state["running"] and state["stack"] is None and time.monotonic() - started > seconds / 2:
                frame = sys._current_frames().get(loop_thread)  # noqa: SLF001 (the only view of another thread)
                if frame is not None and state["start"] == started:
                    state["stack"] = " <- ".join(f"{f.filename}:{f.lineno} {f.name}"
                                                 for f in reversed(traceback.extract_stack(frame)[-14:]))

    threading.Thread(target=watchdog, name="loop-watchdog", daemon=True).start()


def warm_up() -> None:
    """What would otherwise run inside the event loop on first use, done in a worker thread once serving:
    the shared TLS context (CA bundle), the HTTP client stack (kept out of the start: see
    ``xiajiao.gateway.net``) and modules imported lazily by libraries on their first call."""
    import importlib

    from .gateway.net import default_ssl_context

    default_ssl_context()
    for name in ("xiajiao.gateway.http", "sniffio", "anyio._backends._asyncio"):
        try:
            importlib.import_module(name)
        except ImportError:  # not installed: then nobody imports it on first use either
            pass


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
        loop.run_in_executor(None, warm_up)
        if settings.loop_slow_ms > 0:  # from now on users are served: nothing may hold the loop
            loop.call_soon(watch_loop, loop, settings.loop_slow_ms / 1000)

    async def shutdown_trigger() -> None:
        await stop.wait()
        await app.xj.quiesce()  # sockets first: Hypercorn then waits only for requests to finish

    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)
