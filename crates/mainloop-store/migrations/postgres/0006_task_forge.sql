-- A task's mirror on a forge (GitHub): its repository, plan issue and pull request
-- numbers (indexed, so a webhook finds its task), and the lifecycle's own bookkeeping
-- (comment ids, polling cursors) as a JSON document only the worker reads.

CREATE TABLE task_forge (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id),
    repo TEXT NOT NULL,
    issue_number BIGINT,
    pr_number BIGINT,
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX task_forge_issue ON task_forge (repo, issue_number);
CREATE INDEX task_forge_pr ON task_forge (repo, pr_number);
