"""The plugin tutorial works as written: its single-file tool loads from XIAJIAO_PLUGINS_DIR and the
example package in docs/examples builds, installs with pip and is found through its entry point; an
agent calls each tool in a turn driven by the fake model."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

from conftest import ROOT, Frames, llm_settings, login, make_channel, running_app, user_says
from fake_llm import Call, Reply
from xiajiao.settings import load_settings

TUTORIAL = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "docs" / "examples" / "xiajiao-units"


def tutorial_file(name: str) -> str:
    """The code block the tutorial gives for ``name``."""
    text = TUTORIAL.read_text(encoding="utf-8")
    found = re.search(rf"<!-- tutorial: {re.escape(name)} -->\n```python\n(.*?)```", text, re.S)
    assert found, f"docs/plugins.md has no tutorial block for {name}"
    return found.group(1)


async def tool_turn(app, fake, tool: str, calls: list[dict]) -> list[dict]:
    """The coder agent, allowed ``tool``, calls it once per entry of ``calls``; the stored results."""
    await app.xj.engine.agents.update("coder", {"tools": [tool]})
    ch = await make_channel(app, ["coder"], type="dm")
    frames = Frames(app, ch["id"])
    fake.script(Reply(tool_calls=[Call(tool, args, id=f"c{i}") for i, args in enumerate(calls)]), Reply(text="done"))
    await user_says(app, ch, "use the tool")
    await frames.wait_for("stream_end")
    assert [t["function"]["name"] for t in fake.chat_requests()[0].json["tools"]] == [tool]
    return [f for f in frames.items if f["type"] == "tool_result"]


async def test_the_tutorials_single_file_tool_is_loaded_from_the_plugins_folder_and_called(tmp_path, fake_llm):
    folder = tmp_path / "my-plugins"
    folder.mkdir()
    (folder / "text_stats.py").write_text(tutorial_file("text_stats.py"), encoding="utf-8")
    async with running_app(llm_settings(tmp_path, fake_llm, plugins_dir=str(folder))) as app:
        owner = app.test_client()
        await login(owner)
        listed = (await (await owner.get("/-/plugins")).get_json())["plugins"]
        [mine] = [p for p in listed if p["name"] == "text_stats"]
        assert mine["registered"] == {"tools": ["text_stats"]}
        results = await tool_turn(app, fake_llm, "text_stats", [{"text": "你好世界 hello"}])
    assert [r["data"]["result"] for r in results] == ["10 characters, 1 words, 4 Chinese characters"]


def install_example(target) -> None:
    """Build the example's wheel offline with this environment's setuptools (from a copy: the build leaves
    files beside the sources) and install it into ``target``."""
    dist, src = target.parent / "dist", target.parent / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    for args in (["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src)],
                 ["install", "--no-deps", "--no-index", "--target", str(target)]):
        if args[0] == "install":
            args.append(str(next(dist.glob("xiajiao_units-*.whl"))))
        res = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


async def test_the_example_package_installs_and_its_entry_point_tool_and_setting_work(tmp_path, fake_llm, monkeypatch):
    site = tmp_path / "site"
    install_example(site)
    assert (site / "xiajiao_units.py").is_file() and list(site.glob("xiajiao_units-0.1.0.dist-info"))
    monkeypatch.syspath_prepend(str(site))  # as if installed into the environment Xiajiao runs in
    base = llm_settings(tmp_path, fake_llm, load_entrypoint_plugins=True)
    settings = load_settings(env={"XIAJIAO_UNITS_PRECISION": "2"}, **{**base.values, **base.pending})
    async with running_app(settings) as app:
        assert app.xj.settings.units_precision == 2
        owner = app.test_client()
        await login(owner)
        listed = (await (await owner.get("/-/plugins")).get_json())["plugins"]
        [units] = [p for p in listed if p["name"] == "units"]
        assert (units["source"], units["version"]) == ("entrypoint", "0.1.0")
        assert units["registered"] == {"settings": ["units_precision"], "tools": ["convert_units"]}
        results = await tool_turn(app, fake_llm, "convert_units", [
            {"value": 3, "from": "m", "to": "ft"}, {"value": 100, "from": "C", "to": "F"},
            {"value": 1, "from": "kg", "to": "ft"}])
    assert [r["data"]["result"] for r in results] == [
        "3 m = 9.84 ft", "100 C = 212 F",
        "Error: cannot convert 'kg' to 'ft'; units: C, F, K, cm, ft, g, in, kg, km, lb, m, mi, mm, oz, t, yd, 尺, 斤, 里"]
    assert results[2]["data"]["error"] is True
