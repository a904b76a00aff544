"""Model provider: the offline demo model. Deterministic, needs no key, says plainly that it
is a demo, streams, and calls a tool when asked, so a new user sees the whole loop work."""
from __future__ import annotations

import asyncio
import json
import re

from xiajiao import (ChatRequest, ProviderConfig, ProviderKind, Setting, TextDelta, Timeouts, ToolCall, ToolCallsDone,
                     Usage, hookimpl)

DEMO_ID = "demo"
DEMO_MODEL = "demo"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_ASKS_TOOL = re.compile(r"\btools?\b|工具|调用|use ", re.I)


def _pieces(text: str) -> list[str]:
    """Words (and single CJK characters) with their trailing spaces: the demo's tokens."""
    return re.findall(r"[\u4e00-\u9fff]|[^\s\u4e00-\u9fff]+\s*|\s+", text)


def _arguments_for(tool: dict, text: str) -> dict:
    params = tool["function"].get("parameters") or {}
    props = params.get("properties") or {}
    args = {}
    for name in params.get("required") or list(props)[:1]:
        kind = (props.get(name) or {}).get("type", "string")
        args[name] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(kind, text)
    return args


def demo_reply(request: ChatRequest) -> tuple[str, ToolCall | None]:
    """What the demo model says (or which tool it calls) for this request."""
    last = request.messages[-1] if request.messages else None
    zh = any(_CJK.search(m.content or "") for m in request.messages if m.role == "user")
    if last is not None and last.role == "tool":
        name = next((c.name for m in request.messages for c in (m.tool_calls or ()) if c.id == last.tool_call_id), "tool")
        result = (last.content or "").strip()[:200]
        return ((f"(演示模型)工具 {name} 返回了:{result}" if zh else
                 f"(demo model) The tool {name} returned: {result}"), None)
    user = next((m.content for m in reversed(request.messages) if m.role == "user"), "") or ""
    if request.tools and _ASKS_TOOL.search(user):
        named = [t for t in request.tools if t["function"]["name"] in user]
        tool = (named or request.tools)[0]
        n = sum(1 for m in request.messages if m.tool_calls)
        return "", ToolCall(f"demo_call_{n}", tool["function"]["name"], json.dumps(_arguments_for(tool, user),
                                                                                  ensure_ascii=False))
    # in a group the engine merges the messages since the agent last spoke into one user turn,
    # oldest first: the latest is the last paragraph
    latest = [p for p in user.strip().split("\n\n") if p.strip()]
    quoted = (latest[-1] if latest else "").strip().replace("\n", " ")[:120]
    if zh:
        return (f"我是离线演示模型,还没有接入真实的大模型。你说:「{quoted}」。"
                "在设置里添加一个模型服务商和密钥,就能得到真正的回答。"), None
    return (f"I am the offline demo model, not a real AI yet. You said: \"{quoted}\". "
            "Add a model provider and its key in Settings to get real answers."), None


class DemoProvider:
    def __init__(self, config: ProviderConfig):
        self.config = config
        self.delay = float(config.options.get("delay", 0.01))

    async def stream(self, request: ChatRequest, *, timeouts: Timeouts):
        text, call = demo_reply(request)
        for piece in _pieces(text):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield TextDelta(piece)
        prompt = sum(len(m.content or "") for m in request.messages) // 4
        yield Usage(prompt, len(text) // 4 + (1 if call else 0))
        if call is not None:
            yield ToolCallsDone([call])

    async def aclose(self) -> None:
        pass


@hookimpl
def register_settings(register):
    register(Setting("demo_delay", 0.01, "Seconds between the offline demo model's streamed words.", float))


@hookimpl
def register_providers(register):
    register(ProviderKind(
        name="demo", factory=DemoProvider, needs_key=False, description="Offline demo model (no key needed)",
        builtin_configs=lambda app: [ProviderConfig(id=DEMO_ID, kind="demo", models=[DEMO_MODEL], context_window=8000,
                                                    options={"delay": app.settings.demo_delay})]))
