"""Tool approvals (a person in the loop): a tool call that needs approval pauses its turn until
someone who may decide approves it, edits its arguments or rejects it.

A tool needs approval when it says so (``Tool.approval``) or when the agent's owner asked for
approval of every tool (``requireApproval`` in the agent's settings). Each request is a row of
``tool_approvals``; its changes go to the channel as ``tool_approval`` frames. No decision within
``tool_approval_timeout`` seconds counts as a rejection (status ``expired``, reason ``timeout``);
a request cut off by a stop of the turn, a shutdown or a crash is expired too (reason
``stopped``, ``shutdown`` or ``restart``), so nothing waits for ever.
"""
from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import BadRequest, Conflict, NotFound, XiajiaoError
from ..ids import new_id, now_iso
from ..models import Actor, Tool

DECISIONS = {"approve": "approved", "edit": "edited", "reject": "rejected"}
STATUSES = ("pending", "approved", "edited", "rejected", "expired")


def needs_approval(tool: Tool, agent: dict) -> bool:
    return bool(tool.approval or (agent.get("config") or {}).get("requireApproval"))


def _iso_in(seconds: float) -> str:
    t = datetime.now(UTC) + timedelta(seconds=max(0.0, seconds))
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def approval_json(row: dict) -> dict:
    edited = row.get("edited_arguments")
    return {"id": row["id"], "channelId": row["channel_id"], "messageId": row["message_id"],
            "replyTo": row["reply_to"], "callId": row["call_id"], "agentId": row["agent_id"],
            "toolName": row["tool_name"], "arguments": json.loads(row["arguments"] or "{}"),
            "editedArguments": json.loads(edited) if edited else None, "status": row["status"],
            "reason": row["reason"], "requestedBy": row["requested_by"], "decidedBy": row["decided_by"],
            "decidedByName": row.get("decided_by_name"), "decidedAt": row["decided_at"],
            "expiresAt": row["expires_at"], "createdAt": row["created_at"]}


def check_arguments(tool: Tool | None, args: Any) -> dict:
    """Edited arguments: a JSON object valid against the tool's schema (400 ``invalid_arguments``)."""
    from jsonschema import Draft202012Validator

    if not isinstance(args, dict):
        raise BadRequest("arguments must be a JSON object", "invalid_arguments")
    if tool is not None:
        errors = sorted(Draft202012Validator(tool.parameters or {}).iter_errors(args), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(the arguments)"
            raise BadRequest(f"arguments do not match the tool's schema: {where}: {first.message}",
                             "invalid_arguments")
    return args


_SELECT = ("SELECT a.*, coalesce(nullif(u.display_name, ''), u.username) AS decided_by_name FROM tool_approvals a "
           "LEFT JOIN users u ON u.id = a.decided_by")


class Approvals:
    """The approval requests of one app and the turns waiting on them."""

    def __init__(self, engine):
        self.engine = engine
        self.app = engine.app
        self.waiters: dict[str, asyncio.Future] = {}
        self.asked: dict[str, dict] = {}  # the rows of the requests waiting in this process

    async def restore(self) -> None:
        """At start: requests left pending by a stop or a crash are expired (reason ``restart``);
        the turns that asked were cut off and read ``interrupted``."""
        await self.app.db.execute(
            "UPDATE tool_approvals SET status = 'expired', reason = 'restart', decided_at = ? WHERE status = 'pending'",
            (now_iso(),))

    async def expire_all(self, reason: str) -> None:
        """Expire every request waiting in this process (a shutdown: nobody is left to decide)."""
        for approval_id in list(self.waiters):
            try:
                await self.resolve(approval_id, "expired", reason=reason)
            except XiajiaoError:
                continue  # decided meanwhile

    async def get(self, approval_id: str) -> dict:
        row = await self.app.db.fetchone(f"{_SELECT} WHERE a.id = ?", (approval_id,))
        if row is None:
            raise NotFound("Approval not found", "approval_not_found")
        return row

    async def list(self, channel_id: str, status: str | None = "pending", limit: int = 50) -> list[dict]:
        where, params = "a.channel_id = ?", [channel_id]
        if status:
            where, params = where + " AND a.status = ?", [*params, status]
        rows = await self.app.db.fetchall(f"{_SELECT} WHERE {where} ORDER BY a.created_at DESC, a.rowid DESC LIMIT ?",
                                          (*params, max(1, min(limit, 200))))
        return [approval_json(r) for r in rows]

    def announce(self, row: dict) -> None:
        """Tell the channel of the request's state (a ``tool_approval`` frame)."""
        self.app.hub.publish(row["channel_id"], "tool_approval", approval_json(row))

    async def create(self, *, channel_id: str, message_id: str | None, reply_to: str | None, call_id: str,
                     agent_id: str, tool_name: str, arguments: Any, requested_by: str | None) -> dict:
        """Store a pending request and get ready to wait for it (see :meth:`wait`); the caller
        announces it (:meth:`announce`) once its ``tool_call`` frame is out."""
        timeout = max(0.0, float(self.app.settings.tool_approval_timeout))
        approval_id = new_id("appr")
        row = {"id": approval_id, "channel_id": channel_id, "message_id": message_id, "reply_to": reply_to,
               "call_id": call_id, "agent_id": agent_id, "tool_name": tool_name,
               "arguments": json.dumps(arguments, ensure_ascii=False), "edited_arguments": None, "status": "pending",
               "reason": None, "requested_by": requested_by, "decided_by": None, "decided_at": None,
               "expires_at": _iso_in(timeout), "created_at": now_iso(), "decided_by_name": None}
        await self.app.db.execute(
            "INSERT INTO tool_approvals (id, channel_id, message_id, reply_to, call_id, agent_id, tool_name, arguments, "
            "status, requested_by, expires_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (row["id"], channel_id, message_id, reply_to, call_id, agent_id, tool_name, row["arguments"], "pending",
             requested_by, row["expires_at"], row["created_at"]))
        self.waiters[approval_id] = asyncio.get_running_loop().create_future()
        self.asked[approval_id] = row
        return row

    async def wait(self, approval_id: str) -> dict:
        """The decided request (its row), once someone decided or the timeout expired it.

        Cancelled (the turn stopped or the app stops): the request is expired before the
        cancellation goes on."""
        future = self.waiters.get(approval_id)
        if future is None:
            return await self.get(approval_id)
        timeout = max(0.0, float(self.app.settings.tool_approval_timeout))
        try:
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(future)
            except TimeoutError:
                try:
                    await self.resolve(approval_id, "expired", reason="timeout")
                except Conflict:
                    pass  # a decision came first: its result is (or is about to be) in the future
                except NotFound:  # the channel was deleted meanwhile: nobody is left to decide
                    return {**self.asked[approval_id], "status": "expired", "reason": "gone"}
                return await future
        except asyncio.CancelledError:
            if not future.done():
                try:
                    await asyncio.shield(self.resolve(approval_id, "expired", reason="stopped"))
                except Exception:  # noqa: BLE001 - the database may be closing; a restart expires it
                    pass
            raise
        finally:
            self.waiters.pop(approval_id, None)
            self.asked.pop(approval_id, None)

    async def resolve(self, approval_id: str, status: str, *, actor: Actor | None = None,
                      arguments: dict | None = None, reason: str | None = None) -> dict:
        """Record a decision (only on a pending request: else 409 ``already_decided``), wake the turn."""
        result = await self.app.db.execute(
            "UPDATE tool_approvals SET status = ?, edited_arguments = ?, reason = ?, decided_by = ?, decided_at = ? "
            "WHERE id = ? AND status = 'pending'",
            (status, json.dumps(arguments, ensure_ascii=False) if arguments is not None else None, reason,
             actor.id if actor else None, now_iso(), approval_id))
        if not result.rowcount:
            await self.get(approval_id)  # 404 for an unknown one
            raise Conflict("This tool call was already decided", "already_decided")
        row = await self.get(approval_id)
        future = self.waiters.get(approval_id)
        if future is not None and not future.done():
            future.set_result(row)
        self.announce(row)
        return row

    # ------------------------------------------------------------------ deciding (REST and WS)

    async def authorize(self, actor: Actor, row: dict, action: str = "channel.read") -> None:
        """May ``actor`` see (``channel.read``) or decide (``tool.approve``) this request? One in a
        channel the caller may not see is not found."""
        from .. import auth

        try:
            await auth.authorized_channel(self.app, actor, row["channel_id"], action,
                                          approval={"id": row["id"], "requestedBy": row["requested_by"]})
        except NotFound:
            raise NotFound("Approval not found", "approval_not_found") from None

    async def decide(self, actor: Actor, approval_id: str, decision: Any, arguments: Any = None) -> dict:
        row = await self.get(approval_id if isinstance(approval_id, str) else "")
        await self.authorize(actor, row, "tool.approve")
        if not isinstance(decision, str) or decision not in DECISIONS:
            raise BadRequest(f"decision must be one of {', '.join(DECISIONS)}", "invalid_decision")
        if row["status"] != "pending":
            raise Conflict("This tool call was already decided", "already_decided")
        edited = None
        if decision == "edit":
            if arguments is None:
                raise BadRequest("edit needs the new arguments", "invalid_arguments")
            edited = check_arguments(self.app.tools.get(row["tool_name"]), arguments)
        return approval_json(await self.resolve(row["id"], DECISIONS[decision], actor=actor, arguments=edited))

    async def ws_decision(self, conn, data: dict) -> None:
        try:
            await self.decide(conn.actor, str(data.get("approvalId") or ""), data.get("decision"),
                              data.get("arguments"))
        except XiajiaoError as exc:
            conn.send_frame("error", {"error": exc.message, "message": exc.message, "code": exc.code,
                                      "type": "approval_decision", "approvalId": data.get("approvalId")})


class PauseClock:
    """Time a turn spent waiting for people (it does not count toward ``max_reply_seconds``)."""

    def __init__(self) -> None:
        self.waiting = 0
        self.paused = 0.0
        self._since = 0.0
        self.resumed = asyncio.Event()
        self.resumed.set()

    def pause(self) -> None:
        if self.waiting == 0:
            self._since = time.monotonic()
            self.resumed.clear()
        self.waiting += 1

    def resume(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.paused += time.monotonic() - self._since
            self.resumed.set()
