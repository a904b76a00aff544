"""Processes under test: the real server and the fake model, each a subprocess of the bench."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
# the checkout whose server is measured (``--server-root``: compare another commit's code)
SERVER_ROOT = Path(os.environ.get("XIAJIAO_BENCH_SERVER_ROOT") or ROOT)
# ``--profile DIR``: every server runs under pyinstrument and leaves a text report in DIR
PROFILE_DIR: Path | None = None
PASSWORD = "bench-owner-password-1"
# The load profile (``--light`` picks the other): "realistic" agents are created like a user's, with
# the memory and knowledge tools on, a few memories and a small knowledge base each, and embeddings
# come from the fake model's OpenAI-compatible /v1/embeddings; "light" agents are bare and embed
# with the in-process hash test embedder.
LOAD_PROFILE = "realistic"
EMBED_DIM = 384  # the dimension the realistic profile asks of the embedding endpoint (e5-small's)
# ``--loop-check MS``: the servers log every callback holding the loop longer than this (CPU time,
# setting loop_slow_ms); ``Server.stop`` collects those lines into SLOW_CALLBACKS (the smoke run sets 50)
LOOP_CHECK_MS = 0.0
SLOW_CALLBACKS: list[str] = []


def realistic() -> bool:
    return LOAD_PROFILE == "realistic"


def base_python() -> str:
    """The interpreter ``python run.py`` means: the one the virtual environment was made from."""
    return getattr(sys, "_base_executable", None) or sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeModel:
    """``python -m bench.fakemodel`` in a subprocess; ``base_url`` is its OpenAI base URL."""

    def __init__(self, chunks: int = 60, delay_ms: float = 0.0, first_byte_ms: float = 0.0):
        self.args = ["--chunks", str(chunks), "--delay-ms", str(delay_ms), "--first-byte-ms", str(first_byte_ms)]
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "FakeModel":
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.fakemodel", *self.args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake model did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Server:
    """``python -m xiajiao.cli serve`` with its data folder in ``data_dir`` on a free port."""

    def __init__(self, data_dir: Path, *, model_url: str = "", embed_url: str = "", env: dict | None = None,
                 access_log: bool = True, via_run_py: bool = False):
        self.data_dir = Path(data_dir)
        self.via_run_py = via_run_py  # start as the README says (``python run.py``), not ``-m xiajiao.cli``
        embed_url = embed_url or model_url
        if realistic() and embed_url:
            embedder = {"XIAJIAO_EMBEDDER": "openai", "XIAJIAO_EMBEDDING_BASE_URL": embed_url,
                        "XIAJIAO_EMBEDDING_API_KEY": "sk-bench", "XIAJIAO_EMBEDDING_DIM": str(EMBED_DIM)}
        else:
            embedder = {"XIAJIAO_EMBEDDER": "hash"}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.proc: subprocess.Popen | None = None
        self.cold_start_ms: float | None = None
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.env = {
            # a user's machine keeps the byte-code it compiled: a sandbox that forbids writing it would
            # make every start compile the project's sources again
            **{k: v for k, v in os.environ.items() if not k.startswith("XIAJIAO_") and k != "PYTHONDONTWRITEBYTECODE"},
            "XIAJIAO_DATA_DIR": str(self.data_dir),
            "XIAJIAO_PORT": str(self.port),
            "XIAJIAO_OWNER_PASSWORD": PASSWORD,
            "XIAJIAO_LOAD_ENTRYPOINT_PLUGINS": "false",
            "XIAJIAO_LOG_LEVEL": "WARNING",
            "XIAJIAO_ACCESS_LOG": "true" if access_log else "false",
            # the load generator is one user sending thousands of requests a second
            "XIAJIAO_RATE_LIMIT_PER_MINUTE": "100000000",
            "XIAJIAO_RATE_LIMIT_BURST": "100000000",
            "XIAJIAO_TURN_RATE_PER_MINUTE": "100000000",
            "XIAJIAO_TURN_RATE_BURST": "100000000",
            "XIAJIAO_UPLOAD_BYTES_PER_MINUTE": "100000000000",
            "XIAJIAO_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
            **embedder,
            **({"XIAJIAO_LOOP_SLOW_MS": str(LOOP_CHECK_MS)} if LOOP_CHECK_MS else {}),
            "XIAJIAO_WS_QUEUE_SIZE": "100000",
            **({"XIAJIAO_OPENAI_BASE_URL": model_url, "XIAJIAO_OPENAI_API_KEY": "sk-bench",
                "XIAJIAO_OPENAI_MODELS": "fake-model", "XIAJIAO_DEFAULT_MODEL": "fake-model"} if model_url else {}),
            **(env or {}),
        }
        self.cookies: dict[str, str] = {}

    async def start(self, timeout: float = 60) -> float:
        """Start and wait for the first 200 on /health; returns the cold start in ms."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        t0 = time.perf_counter()
        cmd = [base_python(), str(SERVER_ROOT / "run.py")] if self.via_run_py else [
            sys.executable, "-m", "xiajiao.cli", "serve"]
        if PROFILE_DIR is not None and not self.via_run_py:
            PROFILE_DIR.mkdir(parents=True, exist_ok=True)
            report = PROFILE_DIR / f"server-{self.data_dir.parent.name}-{self.port}.txt"
            cmd[1:2] = ["-m", "pyinstrument", "--renderer", "text", "--show-all", "-o", str(report), "-m"]
        self.proc = subprocess.Popen(cmd, cwd=SERVER_ROOT, env=self.env,
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log_path}:\n"
                                       + self.log_path.read_text(errors="replace")[-2000:])
                try:
                    r = await client.get(self.base + "/health")
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"server not healthy after {timeout}s; see {self.log_path}")
                await asyncio.sleep(0.002)
        self.cold_start_ms = (time.perf_counter() - t0) * 1000
        return self.cold_start_ms

    def rss(self) -> int:
        """Resident memory of the server process (bytes)."""
        return psutil.Process(self.proc.pid).memory_info().rss

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    async def login(self) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=self.base) as client:
            r = await client.post("/api/login", json={"password": PASSWORD})
            r.raise_for_status()
            self.cookies = dict(r.cookies)
        return self.cookies

    @property
    def token(self) -> str:
        return self.cookies.get("session", "")

    def client(self, **kw) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        return httpx.AsyncClient(base_url=self.base, cookies=self.cookies, timeout=60, limits=limits, **kw)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if LOOP_CHECK_MS and self.log_path.exists() and self.proc is not None:
            self.proc, _proc = None, self.proc
            lines = self.log_path.read_text(errors="replace").splitlines()
            SLOW_CALLBACKS.extend(line.strip()[:3000] for line in lines if "slow callback" in line)


    async def __aenter__(self) -> "Server":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop()
