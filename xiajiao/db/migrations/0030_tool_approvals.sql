-- Tool approvals: a tool call that waits for a person's decision before it runs (approve, edit
-- its arguments, reject); a call nobody decides in time, or one cut off by a restart, is expired.
CREATE TABLE tool_approvals (
    id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    message_id TEXT,
    reply_to TEXT,
    call_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    arguments TEXT NOT NULL DEFAULT '{}',
    edited_arguments TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'edited', 'rejected', 'expired')),
    reason TEXT,
    requested_by TEXT,
    decided_by TEXT,
    decided_at TEXT,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX tool_approvals_channel ON tool_approvals(channel_id, created_at);
CREATE INDEX tool_approvals_pending ON tool_approvals(status) WHERE status = 'pending';
