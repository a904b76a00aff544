-- schedules.db: one agent's scheduled prompts and the log of their runs.
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    cron TEXT,                      -- a cron expression, or NULL for a one-off at run_at
    run_at TEXT,                    -- ISO 8601 with offset, for a one-off
    timezone TEXT NOT NULL DEFAULT 'UTC',
    catch_up INTEGER NOT NULL DEFAULT 1,  -- a run missed while the server was down runs once at start
    enabled INTEGER NOT NULL DEFAULT 1,
    next_run_at TEXT,               -- UTC ISO; NULL when nothing is due any more
    trigger_hash TEXT NOT NULL,     -- sha256 of the incoming-webhook token (the token is shown once)
    created_by TEXT NOT NULL,
    created_role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    schedule_id TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    reason TEXT NOT NULL,           -- schedule | catch_up | manual | trigger
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,           -- running | done | error | stopped | skipped
    message_id TEXT,
    reply_id TEXT,
    error TEXT
);
CREATE INDEX runs_schedule ON runs(schedule_id, id);
