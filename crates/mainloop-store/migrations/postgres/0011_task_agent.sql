-- The coding agent a task runs, by its configured name; tasks from before agents were a
-- choice ran Claude Code.
ALTER TABLE tasks ADD COLUMN agent TEXT NOT NULL DEFAULT 'claude';
