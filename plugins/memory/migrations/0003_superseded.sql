-- A memory replaced by a newer one (an update of the same fact) keeps its row, marked with
-- the id (uid) of the memory that replaces it; search ranks it after current memories and
-- the prompt leaves it out. Deleting the newer memory makes the older one current again.
ALTER TABLE memories ADD COLUMN superseded_by TEXT;
ALTER TABLE memories ADD COLUMN superseded_at TEXT;
CREATE INDEX memories_superseded ON memories(superseded_by);
