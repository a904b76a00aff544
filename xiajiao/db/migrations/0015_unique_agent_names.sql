-- Two agents never share a name (case-insensitive for ASCII): the check in code is not enough
-- when two requests create one name at once. Older duplicates get their id appended first.
UPDATE agents SET name = name || ' (' || id || ')'
 WHERE rowid NOT IN (SELECT min(rowid) FROM agents GROUP BY name COLLATE NOCASE);
CREATE UNIQUE INDEX agents_name_unique ON agents (name COLLATE NOCASE);
