-- A runner bound to one task: the one-shot runners a launcher starts for the task's runs
-- (a Kubernetes Job each) connect with its token. Placement gives such a runner that
-- task's runs and no other's; it is revoked when the task is cleaned up.
ALTER TABLE runners ADD COLUMN task_id TEXT;
CREATE INDEX runners_task ON runners (task_id) WHERE task_id IS NOT NULL;
