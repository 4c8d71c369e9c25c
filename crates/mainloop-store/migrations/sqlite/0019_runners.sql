-- Runners: machines that connect out to the server and run agents for their owner.
-- Only the token's hash is kept (the token is shown once). The offer columns
-- (`version`, `slots`, `labels`, `agents` as JSON arrays of strings) are the last
-- accepted `hello`, so an offline runner still shows what it offered. A revoked runner
-- stays listed; its name may be used again by a new runner.
CREATE TABLE runners (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER,
    revoked_at INTEGER,
    version TEXT,
    slots INTEGER,
    labels TEXT,
    agents TEXT
);
CREATE INDEX runners_user ON runners (user_id, created_at);
CREATE UNIQUE INDEX runners_live_name ON runners (user_id, name) WHERE revoked_at IS NULL;
