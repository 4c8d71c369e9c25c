-- Every plan a task's worker proposed, in order, with the feedback that asked for the
-- next one (null until the user asks to revise that revision).
CREATE TABLE plan_revisions (
    task_id TEXT NOT NULL REFERENCES tasks(id),
    revision BIGINT NOT NULL,
    plan TEXT NOT NULL,
    feedback TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, revision)
);
