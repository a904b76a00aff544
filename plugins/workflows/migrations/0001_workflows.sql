-- plugins/workflows.db: the stored workflows of group channels and the record of their runs.
CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    name TEXT NOT NULL,
    steps TEXT NOT NULL,            -- JSON: [{"agentId", "instruction", "approval", "onError", "retries"}]
    stop_when TEXT,                 -- JSON {"contains": text} | {"notContains": text}, or NULL
    trigger_hash TEXT NOT NULL,     -- sha256 of the incoming-webhook token (the token is shown once)
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX workflows_channel ON workflows(channel_id, created_at);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    started_by TEXT NOT NULL,
    reason TEXT NOT NULL,           -- api | trigger
    input TEXT NOT NULL,
    message_id TEXT,                -- the input, posted in the channel
    stop_when TEXT,                 -- the workflow's stop condition when the run started
    status TEXT NOT NULL,           -- running | paused | suspended | interrupted | completed | failed | rejected | cancelled
    step INTEGER NOT NULL DEFAULT 0,  -- index of the step running, waiting or next
    error TEXT,
    stopped_early INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX runs_workflow ON runs(workflow_id, created_at);
CREATE INDEX runs_status ON runs(status);

CREATE TABLE run_steps (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    template TEXT NOT NULL,
    approval INTEGER NOT NULL DEFAULT 0,
    on_error TEXT NOT NULL DEFAULT 'stop',  -- stop | skip | retry
    retries INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending', -- pending | waiting | running | done | error | skipped | interrupted | rejected | cancelled
    instruction TEXT,               -- the template with the run's values
    output TEXT,
    reply_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    decision TEXT,                  -- approved | rejected (steps that ask first)
    decided_by TEXT,
    decided_by_name TEXT,
    decided_at TEXT,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, idx)
);
