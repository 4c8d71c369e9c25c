-- mainloop schema, SQLite flavour. Timestamps are milliseconds since the epoch;
-- booleans are 0/1 integers and JSON is TEXT so one set of queries serves both backends.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_owner INTEGER NOT NULL DEFAULT 0,
    msg_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    repo TEXT NOT NULL,
    name TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, repo)
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    state TEXT NOT NULL,
    core TEXT NOT NULL,
    description TEXT NOT NULL,
    repo TEXT NOT NULL,
    branch TEXT,
    questions TEXT NOT NULL DEFAULT '[]',
    answers TEXT,
    plan TEXT,
    session_id TEXT,
    cost_usd REAL NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    origin_key TEXT UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX tasks_user_created ON tasks (user_id, created_at);
CREATE INDEX tasks_user_state ON tasks (user_id, state);

CREATE TABLE inbox_items (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    task_id TEXT REFERENCES tasks(id),
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    resolved_at INTEGER
);
CREATE INDEX inbox_open ON inbox_items (user_id, resolved_at, priority, created_at);
CREATE INDEX inbox_task ON inbox_items (task_id, resolved_at);

CREATE TABLE summaries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL REFERENCES users(id),
    text TEXT NOT NULL,
    message_count INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX summaries_user ON summaries (user_id, id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    seq INTEGER NOT NULL,
    thread_pos INTEGER NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    text TEXT NOT NULL,
    turn_id TEXT,
    task_id TEXT,
    summary_id INTEGER REFERENCES summaries(id),
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, seq)
);
CREATE INDEX messages_thread ON messages (user_id, thread_pos, seq);
CREATE INDEX messages_turn ON messages (turn_id, seq);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('event', 0);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_user ON events (user_id, id);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    user_id TEXT,
    lane TEXT,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_after INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX jobs_ready ON jobs (state, run_after);
CREATE INDEX jobs_lane ON jobs (lane, state, id);

CREATE TABLE tool_calls (
    tool_use_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    result TEXT NOT NULL,
    is_error INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
