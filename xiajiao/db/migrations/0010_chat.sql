-- Chat core: a channel membership may be read-only (an observer who cannot post).
ALTER TABLE channel_members ADD COLUMN can_write INTEGER NOT NULL DEFAULT 1;
