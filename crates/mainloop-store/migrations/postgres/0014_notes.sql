-- Notes and decisions: standing context of each user's main thread. `folded` (0 or 1)
-- marks a note that no longer fits in the context's budget; `tool_use_id` is the
-- `remember` call that wrote it, so a replayed call finds its note instead of adding one.
CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    tool_use_id TEXT,
    folded BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX notes_user ON notes (user_id, updated_at);
CREATE UNIQUE INDEX notes_tool_use ON notes (user_id, tool_use_id);

-- The notes section a session that keeps its own context (Claude Code) was last told,
-- per provider, so a turn tells it the notes only when they changed.
CREATE TABLE notes_told (
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    notes TEXT NOT NULL,
    PRIMARY KEY (user_id, provider)
);
