-- Worker runtime state and the per-task transcript of normalised agent events.

ALTER TABLE tasks ADD COLUMN worktree TEXT;
ALTER TABLE tasks ADD COLUMN base_branch TEXT;
-- The key of the job whose input the agent session has already received, so a
-- relaunch after a crash continues instead of repeating the input.
ALTER TABLE tasks ADD COLUMN agent_input_key TEXT;
ALTER TABLE tasks ADD COLUMN transcript_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE transcript (
    task_id TEXT NOT NULL REFERENCES tasks(id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
);
