-- The main thread's own session, for providers that keep one (Claude Code): which
-- session to resume, and how far into the thread it has been told.
CREATE TABLE main_sessions (
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    session_id TEXT,
    -- The thread position of the last message the session was sent.
    delivered_pos BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, provider)
);

-- What each chat turn used, whichever provider answered it.
CREATE TABLE turn_usage (
    turn_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION,
    created_at BIGINT NOT NULL
);
CREATE INDEX turn_usage_user ON turn_usage (user_id, created_at);
