-- When a finished task's worktree, private home and environment were last removed.
-- A task whose `updated_at` is later (it was retried since) is not cleaned any more.
ALTER TABLE tasks ADD COLUMN cleaned_at BIGINT;
