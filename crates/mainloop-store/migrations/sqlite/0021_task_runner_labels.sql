-- The runner labels a task requires (a JSON array of strings): its own and its project's
-- `runner_labels` setting when it was created, so a later change to the project does
-- not move work already under way. Tasks from before runners require none.
ALTER TABLE tasks ADD COLUMN runner_labels TEXT NOT NULL DEFAULT '[]';
