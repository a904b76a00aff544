-- memory.db: one agent's memories. Vectors live in the vec0 table memory_vec
-- (created by xiajiao.vectors for the active embedder; rowid = memories.id).
CREATE TABLE memories (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    class TEXT NOT NULL CHECK (class IN ('semantic', 'episodic', 'procedural')),
    content TEXT NOT NULL,
    importance REAL NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    tags TEXT NOT NULL DEFAULT '[]',
    origin TEXT NOT NULL DEFAULT 'tool' CHECK (origin IN ('tool', 'api', 'consolidation')),
    channel_id TEXT,
    message_id TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    merges INTEGER NOT NULL DEFAULT 0,
    range_start INTEGER,
    range_end INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    created_ts REAL NOT NULL,
    updated_ts REAL NOT NULL
);
CREATE INDEX memories_class ON memories(class, updated_ts);
CREATE INDEX memories_channel ON memories(channel_id);

-- Earlier versions of a memory (before an edit, a merge or a newer summary).
CREATE TABLE memory_versions (
    memory_id INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    content TEXT NOT NULL,
    channel_id TEXT,
    message_id TEXT,
    range_start INTEGER,
    range_end INTEGER,
    replaced_at TEXT NOT NULL,
    PRIMARY KEY (memory_id, version)
);

-- Full text of memories.content (pre-tokenized by xiajiao.text.index_text), rowid = memories.id.
CREATE VIRTUAL TABLE memories_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');

-- Turn counters of each conversation, for consolidation into episodic summaries.
CREATE TABLE conversations (
    channel_id TEXT PRIMARY KEY,
    turns INTEGER NOT NULL DEFAULT 0,
    summarized_seq INTEGER NOT NULL DEFAULT 0,
    summaries INTEGER NOT NULL DEFAULT 0,
    memory_id INTEGER REFERENCES memories(id) ON DELETE SET NULL
);
