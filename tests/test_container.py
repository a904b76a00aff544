"""The container files' contract: a slim Python base, a non-root user, data in a volume at /data,
the port the server listens on, a health check that really answers. (Building the image needs a
Docker daemon and a base image registry; the test suite runs offline, so it checks the contract.)"""
from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import tomllib

from conftest import ROOT
from xiajiao.settings import SETTINGS_BY_NAME


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def of(kind: str) -> list[str]:
    return [rest for word, rest in instructions() if word == kind]


def env() -> dict[str, str]:
    out = {}
    for rest in of("ENV"):
        for item in shlex.split(rest):
            k, _, v = item.partition("=")
            out[k] = v
    return out


def test_the_image_runs_as_a_non_root_user_with_data_in_a_volume():
    assert re.fullmatch(r"python:3\.(1[1-9])-slim(-\w+)?", of("FROM")[0])
    users = of("USER")
    assert users and users[-1] not in ("root", "0")
    assert [w for w, _ in instructions()].index("USER") > max(i for i, (w, _) in enumerate(instructions())
                                                             if w == "RUN")  # nothing runs as root after USER
    assert "/data" in json.loads(of("VOLUME")[0])
    assert env()["XIAJIAO_DATA_DIR"] == "/data" and env()["XIAJIAO_HOST"] == "0.0.0.0"
    port = SETTINGS_BY_NAME["port"].default
    assert of("EXPOSE") == [str(port)] and env()["XIAJIAO_PORT"] == str(port)
    assert json.loads(of("CMD")[0]) == ["xiajiao", "serve"]


def test_the_image_copies_everything_the_package_needs():
    copied = {part for rest in of("COPY") for part in rest.split()[:-1]}
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["readme"] in copied and {"pyproject.toml", "setup.py"} <= copied
    assert {"xiajiao", "plugins", "web"} <= copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored)


def healthcheck_command(text: str) -> list[str]:
    return json.loads(re.search(r'CMD (\[.*\])', text).group(1))


async def test_the_health_check_command_answers_against_a_live_server(server):
    app, base = server
    cmd = healthcheck_command(of("HEALTHCHECK")[0])
    assert cmd[0] == "python" and "/health" in cmd[-1]
    port = str(SETTINGS_BY_NAME["port"].default)
    script = cmd[-1].replace(f"127.0.0.1:{port}", base.removeprefix("http://"))
    assert await run(sys.executable, *cmd[1:-1], script) == 0  # the server runs on this loop: don't block it
    dead = cmd[-1].replace(f"127.0.0.1:{port}", "127.0.0.1:9")  # nothing listens: unhealthy
    assert await run(sys.executable, *cmd[1:-1], dead) != 0


async def run(*argv: str) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    return await asyncio.wait_for(proc.wait(), 30)


def test_compose_maps_the_port_and_the_volume_and_checks_health():
    text = (ROOT / "compose.yaml").read_text()
    port = SETTINGS_BY_NAME["port"].default
    assert re.search(rf'^\s+- "(127\.0\.0\.1:)?{port}:{port}"$', text, re.M)
    assert re.search(r"^\s+- xiajiao-data:/data$", text, re.M) and re.search(r"^volumes:\n  xiajiao-data:", text, re.M)
    assert "build: ." in text and "XIAJIAO_DATA_DIR: /data" in text
    line = next(line for line in text.splitlines() if line.strip().startswith("test:"))
    assert json.loads(line.split("test:", 1)[1]) == ["CMD", *healthcheck_command(of("HEALTHCHECK")[0])]
