"""plugins/workflows.db: workflows (checked here), runs and their steps; the instruction templates."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from xiajiao import BadRequest, get_agent, migrations_from_dir, new_id, new_trigger_token, now_iso, plugin_db

MIGRATIONS = migrations_from_dir(Path(__file__).parent / "migrations")
MAX_STEPS = 20
MAX_RETRIES = 5
MAX_TEXT = 8000
ON_ERROR = ("stop", "skip", "retry")
STEP_KEYS = {"agentId", "instruction", "approval", "onError", "retries"}
VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
ACTIVE = ("running", "paused", "suspended", "interrupted")  # a run that may still go on
FINISHED = ("completed", "failed", "rejected", "cancelled")


async def db(app: Any):
    return await plugin_db(app, "workflows", MIGRATIONS)


# ------------------------------------------------------------------ templates

def check_template(text: Any, index: int) -> str:
    """A step's instruction: text with ``{{input}}``, ``{{previous}}`` and ``{{stepN}}`` (an earlier step's output)."""
    where = f"step {index + 1}"
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise BadRequest(f"{where}: the instruction must be 1 to {MAX_TEXT} characters", "invalid_template")
    for name in VARIABLE.findall(text):
        n = name[4:] if name.startswith("step") else ""
        ok = name in ("input", "previous") or (n.isdigit() and 1 <= int(n) <= index)
        if not ok:
            raise BadRequest(f"{where}: unknown variable {{{{{name}}}}} (use {{{{input}}}}, {{{{previous}}}} or "
                             f"{{{{stepN}}}} of an earlier step)", "invalid_template")
    rest = VARIABLE.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise BadRequest(f"{where}: a '{{{{' without its '}}}}' (variables look like {{{{previous}}}})",
                         "invalid_template")
    return text.strip()


def render(template: str, values: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: values.get(m.group(1), ""), template)


def check_stop_when(value: Any) -> dict | None:
    if value is None:
        return None
    if (not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("contains", "notContains")
            or not isinstance(next(iter(value.values())), str) or not next(iter(value.values())).strip()):
        raise BadRequest("'stopWhen' is {\"contains\": text} or {\"notContains\": text}", "invalid_stop_condition")
    return value


def stops(stop_when: dict | None, output: str) -> bool:
    """Does a step's output meet the workflow's stop condition (case-insensitive)?"""
    if not stop_when:
        return False
    (kind, text), = stop_when.items()
    found = text.casefold() in (output or "").casefold()
    return found if kind == "contains" else not found


def check_steps(app: Any, steps: Any, channel_agents: set[str]) -> list[dict]:
    if not isinstance(steps, list) or not steps:
        raise BadRequest("A workflow needs at least one step", "empty_steps")
    if len(steps) > MAX_STEPS:
        raise BadRequest(f"At most {MAX_STEPS} steps", "too_many_steps")
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise BadRequest(f"step {i + 1}: send an object", "invalid_step")
        unknown = set(step) - STEP_KEYS
        if unknown:
            raise BadRequest(f"step {i + 1}: unknown field(s) {', '.join(sorted(unknown))}", "unknown_field")
        agent_id = step.get("agentId")
        if not isinstance(agent_id, str) or get_agent(app, agent_id) is None:
            raise BadRequest(f"step {i + 1}: unknown agent {agent_id!r}", "unknown_agent")
        if agent_id not in channel_agents:
            raise BadRequest(f"step {i + 1}: {agent_id} is not in this channel", "agent_not_in_channel")
        on_error = step.get("onError", "stop")
        if on_error not in ON_ERROR:
            raise BadRequest(f"step {i + 1}: onError is one of {', '.join(ON_ERROR)}", "invalid_on_error")
        retries = step.get("retries", 1 if on_error == "retry" else 0)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise BadRequest(f"step {i + 1}: retries is 0 to {MAX_RETRIES}", "invalid_retries")
        instruction = step.get("instruction")
        if instruction is None:
            instruction = "{{previous}}"
        out.append({"agentId": agent_id, "instruction": check_template(instruction, i),
                    "approval": bool(step.get("approval", False)), "onError": on_error,
                    "retries": retries if on_error == "retry" else 0})
    return out


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise BadRequest("'name' must be 1 to 100 characters", "invalid_name")
    return value.strip()


# ------------------------------------------------------------------ workflows

def workflow_json(row: dict, last_run: dict | None = None) -> dict:
    return {"id": row["id"], "channelId": row["channel_id"], "name": row["name"], "steps": json.loads(row["steps"]),
            "stopWhen": json.loads(row["stop_when"]) if row["stop_when"] else None, "createdBy": row["created_by"],
            "createdAt": row["created_at"], "updatedAt": row["updated_at"], "triggerUrl": f"/api/triggers/{row['id']}",
            "lastRun": last_run}


async def create(app: Any, *, channel_id: str, name: str, steps: list[dict], stop_when: dict | None,
                 creator: str) -> tuple[dict, str]:
    token, hashed = new_trigger_token()
    now = now_iso()
    row = {"id": new_id("wf"), "channel_id": channel_id, "name": name, "steps": json.dumps(steps, ensure_ascii=False),
           "stop_when": json.dumps(stop_when, ensure_ascii=False) if stop_when else None, "trigger_hash": hashed,
           "created_by": creator, "created_at": now, "updated_at": now}
    await (await db(app)).execute(f"INSERT INTO workflows ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                  tuple(row.values()))
    return row, token


async def get(app: Any, workflow_id: str) -> dict | None:
    if not isinstance(workflow_id, str) or not workflow_id.startswith("wf_"):
        return None
    return await (await db(app)).fetchone("SELECT * FROM workflows WHERE id = ?", (workflow_id,))


async def of_channel(app: Any, channel_id: str) -> list[dict]:
    return await (await db(app)).fetchall("SELECT * FROM workflows WHERE channel_id = ? ORDER BY created_at, id",
                                          (channel_id,))


async def update(app: Any, workflow_id: str, changes: dict) -> dict:
    changes = {**changes, "updated_at": now_iso()}
    d = await db(app)
    await d.execute(f"UPDATE workflows SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                    (*changes.values(), workflow_id))
    return await d.fetchone("SELECT * FROM workflows WHERE id = ?", (workflow_id,))


async def delete(app: Any, workflow_id: str) -> None:
    def work(conn):
        conn.execute("DELETE FROM run_steps WHERE run_id IN (SELECT id FROM runs WHERE workflow_id = ?)", (workflow_id,))
        conn.execute("DELETE FROM runs WHERE workflow_id = ?", (workflow_id,))
        conn.execute("DELETE FROM workflows WHERE id = ?", (workflow_id,))

    await (await db(app)).run_write(work)


# ------------------------------------------------------------------ runs

async def new_run(app: Any, workflow: dict, *, started_by: str, reason: str, text: str) -> str:
    run_id = new_id("wfr")
    now = now_iso()
    steps = json.loads(workflow["steps"])

    def work(conn):
        conn.execute("INSERT INTO runs (id, workflow_id, channel_id, started_by, reason, input, stop_when, status, "
                     "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (run_id, workflow["id"], workflow["channel_id"], started_by, reason, text, workflow["stop_when"],
                      "running", now, now))
        for i, s in enumerate(steps):
            conn.execute("INSERT INTO run_steps (run_id, idx, agent_id, template, approval, on_error, retries) "
                         "VALUES (?,?,?,?,?,?,?)", (run_id, i, s["agentId"], s["instruction"], int(s["approval"]),
                                                    s["onError"], s["retries"]))

    await (await db(app)).run_write(work)
    return run_id


async def run_row(app: Any, run_id: str) -> dict | None:
    if not isinstance(run_id, str) or not run_id.startswith("wfr_"):
        return None
    return await (await db(app)).fetchone("SELECT * FROM runs WHERE id = ?", (run_id,))


async def steps_of(app: Any, run_id: str) -> list[dict]:
    return await (await db(app)).fetchall("SELECT * FROM run_steps WHERE run_id = ? ORDER BY idx", (run_id,))


async def set_run(app: Any, run_id: str, **fields: Any) -> None:
    fields["updated_at"] = now_iso()
    if fields.get("status") in FINISHED:
        fields["finished_at"] = fields["updated_at"]
    await (await db(app)).execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                                  (*fields.values(), run_id))


async def set_step(app: Any, run_id: str, idx: int, **fields: Any) -> None:
    await (await db(app)).execute(f"UPDATE run_steps SET {', '.join(f'{k} = ?' for k in fields)} "
                                  "WHERE run_id = ? AND idx = ?", (*fields.values(), run_id, idx))


async def decide(app: Any, run_id: str, idx: int, decision: str, actor: Any) -> bool:
    """Record a decision on a waiting step, once: False when it was decided already (or is not waiting)."""
    d = await db(app)
    now = now_iso()

    def work(conn):
        cur = conn.execute("UPDATE run_steps SET decision = ?, decided_by = ?, decided_by_name = ?, decided_at = ?, "
                           "status = ? WHERE run_id = ? AND idx = ? AND status = 'waiting' AND decision IS NULL",
                           (decision, actor.id, actor.name, now, "pending" if decision == "approved" else "rejected",
                            run_id, idx))
        if cur.rowcount != 1:
            return False
        status = "running" if decision == "approved" else "rejected"
        conn.execute("UPDATE runs SET status = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status = 'paused'",
                     (status, now, now if status == "rejected" else None, run_id))
        return True

    return await d.run_write(work)


async def runs_of(app: Any, workflow_id: str, limit: int = 50) -> list[dict]:
    return await (await db(app)).fetchall("SELECT * FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, id DESC "
                                          "LIMIT ?", (workflow_id, limit))


async def active_runs(app: Any, channel_id: str) -> list[dict]:
    marks = ",".join("?" * len(ACTIVE))
    return await (await db(app)).fetchall(f"SELECT * FROM runs WHERE channel_id = ? AND status IN ({marks}) "
                                          "ORDER BY created_at", (channel_id, *ACTIVE))


async def mark_interrupted(app: Any) -> int:
    """At start: a step cut off by the stop is ``interrupted``, and so is its run (it can be resumed)."""
    now = now_iso()

    def work(conn):
        conn.execute("UPDATE run_steps SET status = 'interrupted', error = 'the server stopped', finished_at = ? "
                     "WHERE status = 'running'", (now,))
        return conn.execute("UPDATE runs SET status = 'interrupted', error = 'the server stopped', updated_at = ? "
                            "WHERE status = 'running'", (now,)).rowcount

    return await (await db(app)).run_write(work)


def step_json(row: dict) -> dict:
    out = {"index": row["idx"], "agentId": row["agent_id"], "instruction": row["instruction"] or row["template"],
           "approval": bool(row["approval"]), "onError": row["on_error"], "retries": row["retries"],
           "status": row["status"], "output": row["output"], "replyId": row["reply_id"], "attempts": row["attempts"],
           "error": row["error"], "startedAt": row["started_at"], "finishedAt": row["finished_at"]}
    if row["decision"]:
        out["decision"] = {"decision": row["decision"], "by": row["decided_by"], "byName": row["decided_by_name"],
                           "at": row["decided_at"]}
    return out


def run_json(row: dict, steps: list[dict], workflow_name: str = "") -> dict:
    return {"id": row["id"], "workflowId": row["workflow_id"], "workflowName": workflow_name,
            "channelId": row["channel_id"], "startedBy": row["started_by"], "reason": row["reason"],
            "input": row["input"], "messageId": row["message_id"], "status": row["status"], "step": row["step"],
            "totalSteps": len(steps), "error": row["error"], "stoppedEarly": bool(row["stopped_early"]),
            "createdAt": row["created_at"], "updatedAt": row["updated_at"], "finishedAt": row["finished_at"],
            "steps": [step_json(s) for s in steps]}


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def now() -> str:
    return now_iso()
