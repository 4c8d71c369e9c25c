-- Where each task's work happens (`local` or `forge`), decided when it is created; a
-- task with a forge mirror record was created on the forge.
ALTER TABLE tasks ADD COLUMN workplace TEXT NOT NULL DEFAULT 'local';
UPDATE tasks SET workplace = 'forge' WHERE id IN (SELECT task_id FROM task_forge);
