"""schedules.db of each agent, and the arithmetic of when a schedule runs next."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from xiajiao import BadRequest, migrations_from_dir, new_id, new_trigger_token, now_iso

MIGRATIONS = migrations_from_dir(Path(__file__).parent / "migrations")
UTC = dt.UTC
MAX_PROMPT = 8000


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"Unknown time zone {name!r} (use an IANA name such as 'Asia/Shanghai' or 'UTC')",
                         "invalid_timezone") from None


def check_cron(expr: str) -> str:
    from croniter import croniter

    expr = " ".join(expr.split())
    if not croniter.is_valid(expr) or len(expr.split()) != 5:
        raise BadRequest(f"Invalid cron expression {expr!r} (five fields: minute hour day month weekday)",
                         "invalid_cron")
    return expr


def parse_at(value: str, zone: ZoneInfo) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'at' must be an ISO 8601 time, e.g. 2026-12-24T09:00 (got {value!r})", "invalid_time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)  # a time without an offset is in the schedule's time zone
    return when.astimezone(UTC)


def next_run(cron: str | None, run_at: str | None, zone_name: str, after: dt.datetime) -> dt.datetime | None:
    """The first run strictly after ``after`` (aware), in UTC; None when nothing is left to run."""
    if cron:
        from croniter import croniter

        local = after.astimezone(parse_zone(zone_name))
        return croniter(cron, local).get_next(dt.datetime).astimezone(UTC)
    if run_at:
        at = dt.datetime.fromisoformat(run_at)
        return at if at > after else None
    return None


def iso(when: dt.datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if when else None


def parse_iso(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


async def open_db(app: Any, agent_id: str):
    return await app.workspace_db(agent_id, "schedules.db", MIGRATIONS)


def has_db(app: Any, agent_id: str) -> bool:
    return (app.workspace(agent_id) / "schedules.db").exists()


async def create(app: Any, agent_id: str, *, channel_id: str, prompt: str, cron: str | None, at: str | None,
                 timezone: str, catch_up: bool, creator: Any, now: dt.datetime) -> tuple[dict, str]:
    """Store a schedule; returns (row, the trigger token shown this once)."""
    prompt = (prompt or "").strip()
    if not prompt or len(prompt) > MAX_PROMPT:
        raise BadRequest(f"'prompt' must be 1 to {MAX_PROMPT} characters", "invalid_prompt")
    if bool(cron) == bool(at):
        raise BadRequest("Give exactly one of 'cron' (repeating) or 'at' (once)", "invalid_schedule")
    zone = parse_zone(timezone or "UTC")
    run_at = None
    if cron:
        cron = check_cron(cron)
    else:
        when = parse_at(at or "", zone)
        if when <= now:
            raise BadRequest("'at' is in the past", "invalid_time")
        run_at = when.isoformat()
    first = next_run(cron, run_at, zone.key, now)
    token, token_hashed = new_trigger_token()
    row = {"id": new_id("sch"), "channel_id": channel_id, "prompt": prompt, "cron": cron, "run_at": run_at,
           "timezone": zone.key, "catch_up": int(bool(catch_up)), "enabled": 1, "next_run_at": iso(first),
           "trigger_hash": token_hashed, "created_by": creator.id, "created_role": creator.role,
           "created_at": now_iso(), "updated_at": now_iso()}
    db = await open_db(app, agent_id)
    cols = ", ".join(row)
    await db.execute(f"INSERT INTO schedules ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    return row, token


async def get(app: Any, agent_id: str, schedule_id: str) -> dict | None:
    if not has_db(app, agent_id):
        return None
    db = await open_db(app, agent_id)
    return await db.fetchone("SELECT * FROM schedules WHERE id = ?", (schedule_id,))


async def all_rows(app: Any, agent_id: str) -> list[dict]:
    if not has_db(app, agent_id):
        return []
    db = await open_db(app, agent_id)
    return await db.fetchall("SELECT * FROM schedules ORDER BY created_at")


async def update(app: Any, agent_id: str, schedule_id: str, changes: dict) -> dict:
    db = await open_db(app, agent_id)
    changes = {**changes, "updated_at": now_iso()}
    sets = ", ".join(f"{k} = ?" for k in changes)
    await db.execute(f"UPDATE schedules SET {sets} WHERE id = ?", (*changes.values(), schedule_id))
    return await db.fetchone("SELECT * FROM schedules WHERE id = ?", (schedule_id,))


async def delete(app: Any, agent_id: str, schedule_id: str) -> None:
    db = await open_db(app, agent_id)

    def work(conn):
        conn.execute("DELETE FROM runs WHERE schedule_id = ?", (schedule_id,))
        conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    await db.run_write(work)


async def start_run(app: Any, agent_id: str, schedule_id: str, reason: str, status: str = "running",
                    error: str | None = None) -> int:
    db = await open_db(app, agent_id)
    done = now_iso() if status != "running" else None
    res = await db.execute("INSERT INTO runs (schedule_id, reason, started_at, finished_at, status, error) "
                           "VALUES (?,?,?,?,?,?)", (schedule_id, reason, now_iso(), done, status, error))
    return res.lastrowid


async def finish_run(app: Any, agent_id: str, run_id: int, **fields: Any) -> None:
    db = await open_db(app, agent_id)
    fields["finished_at"] = now_iso()
    sets = ", ".join(f"{k} = ?" for k in fields)
    await db.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*fields.values(), run_id))


async def runs(app: Any, agent_id: str, schedule_id: str, limit: int = 50) -> list[dict]:
    db = await open_db(app, agent_id)
    return await db.fetchall("SELECT * FROM runs WHERE schedule_id = ? ORDER BY id DESC LIMIT ?",
                             (schedule_id, limit))


def run_json(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {"id": row["id"], "reason": row["reason"], "status": row["status"], "startedAt": row["started_at"],
            "finishedAt": row["finished_at"], "messageId": row["message_id"], "replyId": row["reply_id"],
            "error": row["error"]}


def schedule_json(row: dict, agent_id: str, last: dict | None = None) -> dict:
    return {"id": row["id"], "agentId": agent_id, "channelId": row["channel_id"], "prompt": row["prompt"],
            "cron": row["cron"], "at": row["run_at"], "timezone": row["timezone"], "catchUp": bool(row["catch_up"]),
            "enabled": bool(row["enabled"]), "nextRunAt": row["next_run_at"], "createdBy": row["created_by"],
            "createdAt": row["created_at"], "updatedAt": row["updated_at"], "lastRun": run_json(last)}
