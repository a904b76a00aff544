-- Teams: a person's avatar (text: an emoji or initials' override, or an uploaded image's URL),
-- and the channels an invite's new account joins.
ALTER TABLE users ADD COLUMN avatar TEXT NOT NULL DEFAULT '';
ALTER TABLE invites ADD COLUMN channel_ids TEXT NOT NULL DEFAULT '[]';
