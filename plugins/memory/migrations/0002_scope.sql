-- Whose a memory is: the user it came from (NULL: nobody in particular) and its scope.
-- private: recalled only where its people may see it (its channel; its user's own one-person channels);
-- shared: a team fact, recalled everywhere, set by an explicit choice of the owner or an admin.
ALTER TABLE memories ADD COLUMN user_id TEXT;
ALTER TABLE memories ADD COLUMN scope TEXT NOT NULL DEFAULT 'private' CHECK (scope IN ('private', 'shared'));
-- memories written before scopes existed: those an admin typed in stay team facts
UPDATE memories SET scope = 'shared' WHERE origin = 'api';
CREATE INDEX memories_scope ON memories(scope, user_id, channel_id);
