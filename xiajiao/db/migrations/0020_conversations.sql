-- Conversations that hold up: topics and branches (a tree of channels), reply versions,
-- stored chain runs.

-- A topic or branch is a channel with a parent. A branch inherits the parent's messages up to
-- fork_seq (read through the parent, never copied); a topic (fork_seq NULL) starts empty.
ALTER TABLE channels ADD COLUMN parent_id TEXT REFERENCES channels(id) ON DELETE CASCADE;
ALTER TABLE channels ADD COLUMN fork_seq INTEGER;
ALTER TABLE channels ADD COLUMN fork_message_id TEXT;
ALTER TABLE channels ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN archived_at TEXT;
CREATE INDEX channels_parent ON channels(parent_id);

-- Versions of one reply (regenerate, retry, edit-and-resend): rows sharing version_group
-- (the id of the first version); the older ones are superseded and left out of the model's history.
ALTER TABLE messages ADD COLUMN version_group TEXT;
ALTER TABLE messages ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_version_group ON messages(version_group) WHERE version_group IS NOT NULL;

-- Chain runs: one row per run, updated at each step, so a run waiting for approval
-- is still waiting after a restart.
CREATE TABLE chain_runs (
    id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    started_by TEXT,
    agent_ids TEXT NOT NULL DEFAULT '[]',
    approval INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'running',
    current_agent TEXT,
    handoff TEXT NOT NULL DEFAULT '',
    reason TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX chain_runs_channel ON chain_runs(channel_id, created_at);
