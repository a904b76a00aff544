"""The server's JSON writer: orjson where it can, the standard encoder's output either way."""
from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from xiajiao import jsonio


def standard(obj, default=None):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=default)


@dataclasses.dataclass
class Point:
    x: int
    label: str


def flask_like(value):
    if isinstance(value, datetime.date):
        return value.isoformat() + "!"
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


@pytest.mark.parametrize("obj", [
    {"content": "部署虾饺 with Docker", "n": 3, "ok": True, "none": None, "f": 1.5, "list": [1, "二", {"三": []}]},
    {1: "int key", "nested": {2: [3]}},
    {"big": 2 ** 70},  # beyond 64 bits: the standard encoder takes over
    {"lone": "\ud800"},  # a lone surrogate: likewise
    {"emoji": "🦐", "quote": "\"<script>\"", "newline": "a\nb", "nul": "\x00"},
    [],
])
def test_dumps_writes_what_the_standard_encoder_writes(obj):
    assert jsonio.dumps(obj) == standard(obj)


def test_floats_keep_their_values():
    values = [1e20, 1.0, 0.1, 1e-7, 2.5e-5, -0.0, 123456789.123]
    assert json.loads(jsonio.dumps(values)) == values
    assert jsonio.dumps({"x": float("nan")}) == '{"x":null}'  # NaN is not JSON


def test_dates_and_dataclasses_go_through_default_as_before():
    obj = {"when": datetime.date(2026, 12, 3), "at": datetime.datetime(2026, 12, 3, 8, 0), "p": Point(1, "一")}
    assert jsonio.dumps(obj, default=flask_like) == standard(obj, default=flask_like)
    with pytest.raises(TypeError):
        jsonio.dumps({"x": object()})


def test_loads_reads_what_the_standard_parser_reads():
    for text in ('{"a":"虾饺","b":[1,2.5,null]}', '"\\ud800"', "[]"):
        assert jsonio.loads(text) == json.loads(text)
    with pytest.raises(ValueError):
        jsonio.loads("{not json")


async def test_responses_and_frames_keep_chinese_readable(owner):
    resp = await owner.post("/api/channels", json={"name": "部署小组", "type": "group"})
    raw = await resp.get_data(as_text=True)
    assert "部署小组" in raw and '":"' in raw  # compact and not \\u-escaped
