-- The temporal pyramid: a digest of each user's days, weeks and months.

-- The user's time zone (an IANA name), in which days end; NULL: the configured default.
ALTER TABLE users ADD COLUMN time_zone TEXT;

-- Every change of a task's state, when it happened: a day's digest reads what ended
-- that day and what was still open at its end, however late it is made.
CREATE TABLE task_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX task_transitions_user ON task_transitions (user_id, at);
CREATE INDEX task_transitions_task ON task_transitions (task_id, at);

-- Tasks from before: created queued, and in their present state since their last change.
INSERT INTO task_transitions (task_id, user_id, from_state, to_state, at)
SELECT id, user_id, NULL, 'queued', created_at FROM tasks;
INSERT INTO task_transitions (task_id, user_id, from_state, to_state, at)
SELECT id, user_id, 'queued', state, updated_at FROM tasks WHERE state <> 'queued';

-- One digest per user, period and start date, made once: the key refuses a second.
-- `facts` is JSON (what the digest names, with ids); `text` is what the model reads.
CREATE TABLE digests (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    period TEXT NOT NULL,
    start_date TEXT NOT NULL,
    end_date TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    quiet INTEGER NOT NULL DEFAULT 0,
    text TEXT NOT NULL,
    facts TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, period, start_date)
);

-- A day's digest reads the messages the user sent that day.
CREATE INDEX messages_user_created ON messages (user_id, created_at);
CREATE INDEX notes_user_created ON notes (user_id, created_at);
