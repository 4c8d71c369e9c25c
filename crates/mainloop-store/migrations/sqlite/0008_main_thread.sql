-- The main thread's own session, for providers that keep one (Claude Code): which
-- session to resume, and how far into the thread it has been told.
CREATE TABLE main_sessions (
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    session_id TEXT,
    -- The thread position of the last message the session was sent.
    delivered_pos INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, provider)
);

-- What each chat turn used, whichever provider answered it.
CREATE TABLE turn_usage (
    turn_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    created_at INTEGER NOT NULL
);
CREATE INDEX turn_usage_user ON turn_usage (user_id, created_at);
