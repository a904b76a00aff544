"""The plain data types plugins and the core exchange (re-exported by ``xiajiao``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Protocol, Sequence

ROLES = ("guest", "member", "admin", "owner")


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


# ------------------------------------------------------------------ actors, agents


@dataclass
class Actor:
    """Who is acting: a logged-in user (``kind='user'``) or an agent acting on its own."""

    id: str
    role: str
    name: str = ""
    kind: Literal["user", "agent", "system"] = "user"
    key_id: str | None = None  # the API key the request came with (None: a session or no key)

    def at_least(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


# ------------------------------------------------------------------ tools


@dataclass
class ToolContext:
    """What a tool function receives besides its arguments."""

    app: Any
    agent: dict
    channel: dict | None
    message: dict | None
    actor: Actor
    depth: int = 0
    extra: dict = field(default_factory=dict)


ToolFunction = Callable[[dict, ToolContext], Awaitable[Any]]


@dataclass
class Tool:
    """A function an agent's model may call.

    ``parameters`` is a JSON schema (an object). ``min_role`` is the least role of the
    *user whose message started the turn* for the call to be allowed. ``approval`` marks a tool whose
    calls wait for a person's approval before they run (mutating or external tools).
    """

    name: str
    description: str
    parameters: dict
    fn: ToolFunction
    read_only: bool = True
    mutating: bool = False
    min_role: str = "guest"
    timeout: float | None = None
    approval: bool = False

    def spec(self) -> dict:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


# ------------------------------------------------------------------ model providers


@dataclass
class Image:
    """An image given to a vision-capable model with a message (base64, no data: prefix)."""

    mime_type: str
    data: str
    name: str = ""


@dataclass
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    name: str | None = None
    tool_calls: list["ToolCall"] | None = None
    tool_call_id: str | None = None
    images: list[Image] | None = None  # user messages: image parts (providers put them in their wire format)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model produced it (may be malformed)


@dataclass
class ChatRequest:
    model: str
    messages: list[ChatMessage]
    tools: list[dict] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCallsDone:
    calls: list[ToolCall]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


ChatEvent = TextDelta | ToolCallsDone | Usage


@dataclass
class ProviderConfig:
    """One configured provider: an instance of a kind, with its endpoint, key and models."""

    id: str
    kind: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)  # never shown in logs or reprs
    models: list[str] = field(default_factory=list)
    context_window: int = 32000
    options: dict = field(default_factory=dict)


class Provider(Protocol):
    config: ProviderConfig

    def stream(self, request: ChatRequest, *, timeouts: "Timeouts") -> AsyncIterator[ChatEvent]:
        """Yield TextDelta / ToolCallsDone / Usage events; raise xiajiao.ProviderError on failure."""

    async def aclose(self) -> None: ...


@dataclass
class Timeouts:
    connect: float = 10.0
    first_token: float = 60.0
    idle: float = 60.0


@dataclass
class ProviderKind:
    """A kind of model provider (``openai``, ``anthropic``, ``demo``) and how to build one."""

    name: str
    factory: Callable[[ProviderConfig], Provider]
    description: str = ""
    default_base_url: str = ""
    needs_key: bool = True
    # configs this kind offers without any user setting (e.g. the offline demo model)
    builtin_configs: Callable[[Any], Sequence[ProviderConfig]] | None = None
    # configs the owner gave through the plugin's settings (environment), read-only in the UI;
    # see xiajiao.env_provider_settings / env_provider_configs
    env_configs: Callable[[Any], Sequence[ProviderConfig]] | None = None


# ------------------------------------------------------------------ embedders, parsers


class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage") -> list[list[float]]:
        """Return one vector of ``dim`` floats per text (normalized)."""


@dataclass
class Parser:
    """Turns an uploaded document into plain text."""

    name: str
    extensions: Sequence[str]  # ".pdf", ".md" …
    mime_types: Sequence[str]
    parse: Callable[[bytes, str], str | Awaitable[str]]
    sniff: Callable[[bytes], bool] | None = None  # content check: does this data look like our type?
    isolate: bool = False  # parse in a worker process capped in memory and time (container formats)


@dataclass
class SearchBackend:
    """A web search engine for the ``web_search`` tool: ``search(app, query, count)`` returns
    ``[{"title", "url", "snippet"}]``."""

    name: str
    description: str
    search: Callable[[Any, str, int], Awaitable[list[dict]]]


@dataclass
class Trigger:
    """Something an incoming webhook can start: ids beginning with ``prefix`` are looked up with
    ``find(app, id)`` (``{"hash": sha256 of its token, "enabled": bool}`` or None) and started with
    ``fire(app, id, text)`` (returns the JSON of what started), at ``POST /api/triggers/<id>``."""

    name: str
    prefix: str
    find: Callable[[Any, str], Awaitable[dict | None]]
    fire: Callable[[Any, str, str], Awaitable[dict]]


@dataclass
class Frame:
    """A WebSocket frame type clients may send: ``await handle(app, actor, data)`` with the frame's
    fields as ``data``; a :class:`~xiajiao.errors.XiajiaoError` it raises answers the client with an
    ``error`` frame carrying its code (and its ``extra`` fields). Answers to everyone go out with
    ``publish_frame``."""

    type: str
    handle: Callable[[Any, Any, dict], Awaitable[None]]


# ------------------------------------------------------------------ domain packs


@dataclass
class Persona:
    id: str
    name: str
    soul: str
    avatar: str = "🤖"
    description: str = ""
    model: str = ""
    tools: list[str] = field(default_factory=list)
    knowledge: bool = False
    aliases: list[str] = field(default_factory=list)  # other names @mentions may use (e.g. English)


@dataclass
class Pack:
    """A domain pack: personas (and, through register_tools, their tools)."""

    name: str
    personas: list[Persona]
    description: str = ""
    default: bool = False  # create these agents on first start


# ------------------------------------------------------------------ prompts


@dataclass
class Prompt:
    """The system prompt of one turn, built from sections that plugins add."""

    soul: str
    sections: list[tuple[str, str, int]] = field(default_factory=list)  # (title, text, priority)

    def add(self, title: str, text: str, priority: int = 50) -> None:
        if text and text.strip():
            self.sections.append((title, text.strip(), priority))

    def render(self) -> str:
        parts = [self.soul.strip()]
        for title, text, _ in sorted(self.sections, key=lambda s: -s[2]):
            parts.append(f"## {title}\n{text}")
        return "\n\n".join(p for p in parts if p)
