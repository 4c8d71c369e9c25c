-- The diff a task last went to review with (a `TaskDiff` as JSON, its text capped), so
-- the work stays viewable after a merge removes the worktree.

CREATE TABLE task_final_diff (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id),
    diff TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
