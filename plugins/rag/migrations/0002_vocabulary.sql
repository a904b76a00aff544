-- Per-term document counts of chunks_fts (read-only view kept by FTS5 itself): a query
-- looks up how common each of its words is, to leave out the ones too common to rank by.
CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, row);
