"""The static checks CI runs before the tests (`python run.py check`): ruff on the repository and
mypy on the core, both configured in pyproject.toml, are clean."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, make_settings


def check(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    res = check("ruff", "check", "--no-cache", ".")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_mypy_finds_nothing_in_the_core():
    res = check("mypy")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Success: no issues found" in res.stdout


def test_routes_reach_the_core_through_the_typed_app(tmp_path):
    from xiajiao.app import create_app
    from xiajiao.quart_app import XiajiaoApp

    app = create_app(make_settings(tmp_path))
    assert isinstance(app, XiajiaoApp) and app.xj.quart is app
    untyped = [p.relative_to(ROOT).as_posix() for p in (ROOT / "xiajiao").rglob("*.py")
               if "current_app" in (src := p.read_text(encoding="utf-8")) and p.name != "quart_app.py"
               and "quart_app import current_app" not in src]
    assert untyped == []
