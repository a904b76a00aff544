-- Machine API: background tasks with their events and webhook deliveries; a webhook secret per API key.
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    api_key_id TEXT,
    agent_id TEXT NOT NULL,
    channel_id TEXT,
    input TEXT NOT NULL,
    webhook TEXT,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    text TEXT NOT NULL DEFAULT '',
    usage TEXT NOT NULL DEFAULT '{}',
    rounds INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    deliveries TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX tasks_user ON tasks(user_id, created_at);
CREATE INDEX tasks_open ON tasks(status) WHERE status IN ('queued', 'running');

CREATE TABLE task_events (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
