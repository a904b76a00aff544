"""Agents: each is a row in ``agents`` plus its folder ``data/workspaces/<id>/`` holding SOUL.md.

The core keeps every agent in memory (they are few and read on every turn); writes go to
the database first, then the cache. SOUL.md is read fresh for each turn (re-read only
when the file changed).
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from .errors import BadRequest, Conflict, NotFound
from .ids import new_id, now_iso
from .models import Persona

log = logging.getLogger("xiajiao.agents")

STATUSES = ("online", "offline", "busy")
@contextlib.contextmanager
def _name_taken(name: str):
    """The database's unique name index, refusing what a concurrent request wrote first, as 409."""
    from .db.driver import errors

    try:
        yield
    except errors.IntegrityError as exc:
        if "agents" not in str(exc) or "name" not in str(exc):
            raise
        raise Conflict(f"An agent named {name!r} already exists", "agent_name_taken") from None


_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
SEEDED_KEY = "agents_seeded"
MAX_SOUL_CHARS = 100_000


MANIFEST = "agent.json"  # the agent's settings, kept in its folder so the folder alone carries the agent
MANIFEST_FIELDS = ("name", "avatar", "description", "model", "tools", "status", "knowledge", "config")


def agent_json(row: dict, soul: str | None = None) -> dict:
    out = {"id": row["id"], "name": row["name"], "avatar": row["avatar"], "description": row["description"],
           "model": row["model"], "tools": list(row["tools"]), "status": row["status"],
           "knowledge": bool(row.get("knowledge"))}
    if (row.get("config") or {}).get("requireApproval"):  # shown when set: every tool call waits for approval
        out["requireApproval"] = True
    if soul is not None:
        out["soul"] = soul
    return out


def _decode(row: dict) -> dict:
    row = dict(row)
    row["tools"] = json.loads(row.get("tools") or "[]")
    row["config"] = json.loads(row.get("config") or "{}")
    row["knowledge"] = bool(row.get("knowledge"))
    return row


class Agents:
    """The agent registry of one app."""

    def __init__(self, app):
        self.app = app
        self.by_id: dict[str, dict] = {}
        self._souls: dict[str, tuple[int, int, str]] = {}  # id -> (mtime_ns, size, text)

    async def load(self) -> None:
        rows = await self.app.db.fetchall("SELECT * FROM agents ORDER BY rowid")
        self.by_id = {r["id"]: _decode(r) for r in rows}

    def all(self) -> list[dict]:
        return list(self.by_id.values())

    def get(self, agent_id: str) -> dict | None:
        return self.by_id.get(agent_id)

    async def lookup(self, name_or_id: str) -> dict | None:
        """The agent by id (or name), reloading once for one that other code wrote to the database."""
        found = self.by_id.get(name_or_id) or self.find(name_or_id)
        if found is None and name_or_id:
            await self.load()
            found = self.by_id.get(name_or_id) or self.find(name_or_id)
        return found

    def require(self, agent_id: str) -> dict:
        agent = self.by_id.get(agent_id)
        if agent is None:
            raise NotFound("Agent not found", "agent_not_found")
        return agent

    def find(self, name_or_id: str) -> dict | None:
        key = (name_or_id or "").strip().lstrip("@").casefold()
        for a in self.by_id.values():
            if a["id"].casefold() == key or a["name"].casefold() == key:
                return a
        return None

    # -- SOUL.md

    def soul_path(self, agent_id: str) -> Path:
        return self.app.workspace(agent_id) / "SOUL.md"

    def soul(self, agent_id: str) -> str:
        """The agent's SOUL.md as it is on disk now."""
        path = self.soul_path(agent_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            return ""
        cached = self._souls.get(agent_id)
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        text = path.read_text(encoding="utf-8")
        self._souls[agent_id] = (st.st_mtime_ns, st.st_size, text)
        return text

    def write_manifest(self, row: dict) -> None:
        path = self.app.workspace(row["id"]) / MANIFEST
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({k: row[k] for k in MANIFEST_FIELDS}, ensure_ascii=False, indent=2) + "\n",
                       encoding="utf-8")
        tmp.replace(path)

    def write_soul(self, agent_id: str, text: str) -> None:
        path = self.soul_path(agent_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        self._souls.pop(agent_id, None)

    # -- validation

    def _check_fields(self, fields: dict, *, current: dict | None = None) -> None:
        if "name" in fields:
            name = (fields["name"] or "").strip()
            if not (1 <= len(name) <= 64) or "@" in name or any(c in name for c in "\n\r\t"):
                raise BadRequest("name must be 1-64 characters, without '@' or line breaks", "invalid_name")
            fields["name"] = name
            for other in self.by_id.values():
                if other["name"].casefold() == name.casefold() and (current is None or other["id"] != current["id"]):
                    raise Conflict(f"An agent named {name!r} already exists", "agent_name_taken")
        if "model" in fields and fields["model"]:
            self.app.engine.gateway.check_model(fields["model"])
        if "tools" in fields:
            tools = fields["tools"]
            if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
                raise BadRequest("tools must be a list of tool names", "invalid_tools")
            unknown = [t for t in tools if t not in self.app.tools]
            if unknown:
                raise BadRequest(f"Unknown tool(s): {', '.join(unknown)}", "unknown_tool")
            fields["tools"] = list(dict.fromkeys(tools))
        if "status" in fields and fields["status"] not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}", "invalid_status")
        if "soul" in fields and fields["soul"] is not None and len(fields["soul"]) > MAX_SOUL_CHARS:
            raise BadRequest(f"soul is longer than {MAX_SOUL_CHARS} characters", "soul_too_long")
        for key in ("avatar", "description"):
            if key in fields and len(fields[key] or "") > (16 if key == "avatar" else 500):
                raise BadRequest(f"{key} is too long", f"invalid_{key}")

    # -- writes

    async def create(self, fields: dict, *, agent_id: str | None = None, pack: str = "") -> dict:
        fields = dict(fields)
        if "name" not in fields:
            raise BadRequest("name is required", "invalid_name")
        self._check_fields(fields)
        agent_id = agent_id or new_id("agent")
        self._check_new_id(agent_id)
        row = self._new_row(agent_id, fields, pack)
        soul = fields.get("soul") or f"# {row['name']}\n\nYou are {row['name']}. {row['description']}".strip()
        self.write_soul(agent_id, soul)
        self.write_manifest(row)
        try:
            await self._insert(row)
        except BaseException:
            shutil.rmtree(self.app.workspace(agent_id), ignore_errors=True)
            raise
        await self.app.hook("on_agent_created", agent=row)
        return row

    def _check_new_id(self, agent_id: str) -> None:
        if not _AGENT_ID.match(agent_id or ""):
            raise BadRequest("invalid agent id", "invalid_agent_id")
        if agent_id in self.by_id:
            raise Conflict(f"Agent {agent_id!r} exists", "agent_exists")

    @staticmethod
    def _new_row(agent_id: str, fields: dict, pack: str) -> dict:
        now = now_iso()
        return {"id": agent_id, "name": fields["name"], "avatar": fields.get("avatar") or "🤖",
                "description": fields.get("description") or "", "model": fields.get("model") or "",
                "tools": fields.get("tools") or [], "status": fields.get("status") or "online",
                "knowledge": bool(fields.get("knowledge")), "pack": pack, "config": fields.get("config") or {},
                "created_at": now, "updated_at": now}

    async def _insert(self, row: dict) -> None:
        with _name_taken(row["name"]):
            await self._insert_row(row)

    async def _insert_row(self, row: dict) -> None:
        await self.app.db.execute(
            "INSERT INTO agents (id, name, avatar, description, model, tools, status, knowledge, pack, config, "
            "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (row["id"], row["name"], row["avatar"], row["description"], row["model"],
             json.dumps(row["tools"], ensure_ascii=False), row["status"], int(row["knowledge"]), row["pack"],
             json.dumps(row["config"], ensure_ascii=False), row["created_at"], row["updated_at"]))
        self.by_id[row["id"]] = row

    def _keep_available(self, fields: dict, origin: str) -> None:
        """Drop the tools and the model this installation lacks (a pack or a copied folder may name them)."""
        if isinstance(fields.get("tools"), list):
            fields["tools"] = [t for t in fields["tools"] if isinstance(t, str) and t in self.app.tools]
        if fields.get("model"):
            try:
                self.app.engine.gateway.check_model(fields["model"])
            except BadRequest:
                log.info("%s: model %s is not configured; using the default", origin, fields["model"])
                fields["model"] = ""

    async def update(self, agent_id: str, fields: dict) -> dict:
        current = self.require(agent_id)
        fields = {k: v for k, v in fields.items() if v is not None}
        self._check_fields(fields, current=current)
        row = dict(current)
        for key in ("name", "avatar", "description", "model", "tools", "status", "knowledge"):
            if key in fields:
                row[key] = bool(fields[key]) if key == "knowledge" else fields[key]
        if "config" in fields:
            row["config"] = {**current["config"], **fields["config"]}
        row["updated_at"] = now_iso()
        with _name_taken(row["name"]):
            await self.app.db.execute(
                "UPDATE agents SET name=?, avatar=?, description=?, model=?, tools=?, status=?, knowledge=?, "
                "config=?, updated_at=? WHERE id=?",
                (row["name"], row["avatar"], row["description"], row["model"],
                 json.dumps(row["tools"], ensure_ascii=False), row["status"], int(row["knowledge"]),
                 json.dumps(row["config"], ensure_ascii=False), row["updated_at"], agent_id))
        if "soul" in fields:
            self.write_soul(agent_id, fields["soul"])
        self.write_manifest(row)
        self.by_id[agent_id] = row
        return row

    async def register(self, agent_id: str) -> dict:
        """Register an agent folder copied in from another installation: ``SOUL.md`` and
        ``agent.json`` give the persona; its memory.db and rag.db come along untouched."""
        self._check_new_id(agent_id)
        folder = self.app.workspace(agent_id)
        if not (folder / "SOUL.md").is_file():
            raise NotFound(f"No agent folder with a SOUL.md at workspaces/{agent_id}", "agent_folder_not_found")
        fields: dict[str, Any] = {}
        manifest = folder / MANIFEST
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise BadRequest(f"workspaces/{agent_id}/{MANIFEST} is not valid JSON", "invalid_manifest") from None
            if not isinstance(data, dict):
                raise BadRequest(f"workspaces/{agent_id}/{MANIFEST} must hold an object", "invalid_manifest")
            fields = {k: data[k] for k in MANIFEST_FIELDS if k in data}
        fields.setdefault("name", agent_id)
        self._keep_available(fields, f"workspaces/{agent_id}")
        self._check_fields(fields)
        row = self._new_row(agent_id, fields, "")
        await self._insert(row)
        self.write_manifest(row)
        await self.app.hook("on_agent_created", agent=row)
        return row

    async def delete(self, agent_id: str) -> None:
        agent = self.require(agent_id)

        def work(conn):
            conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
            conn.execute("DELETE FROM channel_members WHERE member_type = 'agent' AND member_id = ?", (agent_id,))
            conn.execute("UPDATE channels SET default_agent_id = NULL WHERE default_agent_id = ?", (agent_id,))

        await self.app.db.run_write(work)
        self.by_id.pop(agent_id, None)
        self._souls.pop(agent_id, None)
        await self.app.hook("on_agent_deleted", agent=agent)
        await self.app.workspaces.close_agent(agent_id)
        shutil.rmtree(self.app.workspace(agent_id), ignore_errors=True)

    async def seed_defaults(self) -> int:
        """On the very first start, create the agents of the default domain packs."""
        if await self.app.db.fetchval("SELECT 1 FROM settings WHERE key = ?", (SEEDED_KEY,)):
            return 0
        created = 0
        if not self.by_id:
            for pack in self.app.packs:
                if not pack.default:
                    continue
                for persona in pack.personas:
                    await self.create_from_persona(persona, pack.name)
                    created += 1
        await self.app.db.execute("INSERT OR REPLACE INTO settings (key, value, updated_at) VALUES (?, ?, ?)",
                                  (SEEDED_KEY, json.dumps(True), now_iso()))
        return created

    async def create_from_persona(self, persona: Persona, pack: str) -> dict:
        fields: dict[str, Any] = {"name": persona.name, "avatar": persona.avatar, "description": persona.description,
                                  "soul": persona.soul, "knowledge": persona.knowledge,
                                  "config": {"aliases": list(persona.aliases)} if persona.aliases else {}}
        fields["tools"], fields["model"] = list(persona.tools), persona.model
        self._keep_available(fields, f"persona {persona.id}")
        return await self.create(fields, agent_id=persona.id, pack=pack)
