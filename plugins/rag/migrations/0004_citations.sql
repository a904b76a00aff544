-- The passages an agent's prompt numbered [1] … [n] for a message it answered (message_id: the
-- asked message, the reply's replyTo): a citation marker in the reply opens its passage. The
-- latest answer to a message replaces the earlier rows; a deleted document takes its rows along.
CREATE TABLE citations (
    message_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    parent_id INTEGER NOT NULL REFERENCES parents(id) ON DELETE CASCADE,
    chunk_position INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (message_id, n)
);
CREATE INDEX citations_parent ON citations(parent_id);
