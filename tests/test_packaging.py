"""A user's clone and a user's install: the suite needs nothing outside the repository, and the
built wheel serves the app from any folder."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import CORPUS, ROOT, free_port

# ------------------------------------------------------------------ a fresh clone


def test_tests_and_bench_read_nothing_outside_the_repository():
    outside = re.compile(r"ROOT\.parent|\.\./shared|[\"']shared[\"']\s*/")
    files = sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert found == []


def test_the_bilingual_test_pages_are_in_the_repository_and_small():
    pages = sorted(CORPUS.rglob("*.md"))
    langs = {p.relative_to(CORPUS).parts[0] for p in pages}
    assert {"en", "zh"} <= langs
    assert sum(p.stat().st_size for p in pages) < 64 * 1024
    zh = (CORPUS / "zh" / "features" / "rag.md").read_text(encoding="utf-8")
    assert len(re.findall(r"[\u4e00-\u9fff]", zh)) > 500


def test_the_bench_draws_on_the_test_pages_unless_told_otherwise(tmp_path, monkeypatch):
    from bench import corpus

    monkeypatch.delenv(corpus.CORPUS_ENV, raising=False)
    assert corpus.corpus_dir() == CORPUS
    (tmp_path / "a.md").write_text("A sentence long enough to count. 另一个足够长的中文句子在这里。", encoding="utf-8")
    monkeypatch.setenv(corpus.CORPUS_ENV, str(tmp_path))
    corpus.sentences.cache_clear()
    try:
        assert corpus.sentences() == ("A sentence long enough to count.", "另一个足够长的中文句子在这里。")
    finally:
        corpus.sentences.cache_clear()
    monkeypatch.setenv(corpus.CORPUS_ENV, str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="XIAJIAO_BENCH_CORPUS=.* is not a folder"):
        corpus.corpus_dir()


# ------------------------------------------------------------------ a package that installs

PACKAGED = ("pyproject.toml", "setup.py", "README.md", "xiajiao", "plugins", "web")


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of the package's sources (the checkout stays clean), built offline with
    the setuptools of this environment."""
    src = out / "src"
    for name in PACKAGED:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-w", str(out / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [wheel] = (out / "dist").glob("xiajiao-*.whl")
    return wheel


def fresh_venv(folder: Path) -> Path:
    """A new virtual environment whose only extra is read access to this environment's
    dependencies (a path entry, so nothing of this checkout's editable install comes along)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_xiajiao_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return python


def test_the_wheel_holds_every_module_template_static_file_and_migration(tmp_path):
    with zipfile.ZipFile(build_wheel(tmp_path)) as whl:
        names = set(whl.namelist())
    want = {p.relative_to(ROOT).as_posix() for top in ("xiajiao", "plugins") for p in (ROOT / top).rglob("*")
            if p.is_file() and p.suffix in (".py", ".sql", ".md") and "__pycache__" not in p.parts}
    want |= {"xiajiao/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "web").rglob("*") if p.is_file()}
    assert sorted(want - names) == []
    assert "xiajiao/web/templates/login.html" in names and "xiajiao/web/static/i18n/zh.json" in names


async def test_the_installed_package_serves_from_another_folder(tmp_path):
    python = fresh_venv(tmp_path / "venv")
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          str(build_wheel(tmp_path))], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAJIAO_") and k != "PYTHONPATH"}
    port = free_port()
    env.update(XIAJIAO_DATA_DIR=str(tmp_path / "data"), XIAJIAO_PORT=str(port), XIAJIAO_OWNER_PASSWORD="pw-1234567890",
               XIAJIAO_LOAD_ENTRYPOINT_PLUGINS="false", XIAJIAO_ACCESS_LOG="false")
    where = subprocess.run([str(python), "-c", "import xiajiao, plugins.rag; print(xiajiao.__file__); "
                            "print(plugins.rag.__file__)"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    script = python.parent / ("xiajiao.exe" if os.name == "nt" else "xiajiao")
    proc = subprocess.Popen([str(script), "serve"], cwd=elsewhere, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            health = None
            for _ in range(600):  # the first start imports everything and migrates: up to a minute here
                assert proc.poll() is None, proc.stdout.read()[-3000:]
                try:
                    health = await client.get("/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert health is not None and health.status_code == 200, health and health.text
            assert health.json()["checks"]["database"] == "ok"
            login = await client.get("/login")
            assert login.status_code == 200 and "text/html" in login.headers["content-type"]
            assert '<link rel="stylesheet" href="/static/css/app.css">' in login.text
            css = await client.get("/static/css/app.css")
            assert css.status_code == 200 and "text/css" in css.headers["content-type"]
            assert css.text == (ROOT / "web" / "static" / "css" / "app.css").read_text(encoding="utf-8")
            zh = await client.get("/login", headers={"Accept-Language": "zh"})
            assert re.search(r"[\u4e00-\u9fff]", zh.text), "the i18n strings are missing"
            r = await client.post("/api/login", json={"password": "pw-1234567890"})
            assert r.status_code == 200, r.text
            agents = (await client.get("/api/agents")).json()  # the bundled persona pack, from the package
            assert len(agents["agents"]) >= 1
            plugins = (await client.get("/-/plugins")).json()["plugins"]
            assert {"plugins.rag", "plugins.memory", "plugins.provider_openai"} <= {p["name"] for p in plugins}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert (tmp_path / "data" / "xiajiao.db").is_file() and not (elsewhere / "data").exists()
