-- What each agent run cost, when, and which agent ran it: the usage report and the
-- budgets read it (the main thread's turns are in turn_usage).
CREATE TABLE run_usage (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    task_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX run_usage_user ON run_usage (user_id, created_at);
CREATE INDEX run_usage_task ON run_usage (task_id);

-- Tasks from before runs were recorded: their totals, as one run at their last change.
INSERT INTO run_usage (user_id, task_id, agent, cost_usd, input_tokens, output_tokens, created_at)
SELECT user_id, id, agent, cost_usd, input_tokens, output_tokens, updated_at FROM tasks
WHERE cost_usd > 0 OR input_tokens > 0 OR output_tokens > 0;

-- A task's own cost cap, once the human raised it past the default.
ALTER TABLE tasks ADD COLUMN budget_usd DOUBLE PRECISION;

-- Each user's budgets (a JSON object) and whether their work is paused.
CREATE TABLE spending (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    budgets TEXT NOT NULL DEFAULT '{}',
    paused_at BIGINT
);

-- What each agent last said of its account's quota windows.
CREATE TABLE quota_windows (
    user_id TEXT NOT NULL REFERENCES users(id),
    agent TEXT NOT NULL,
    window_name TEXT NOT NULL,
    used_percent DOUBLE PRECISION,
    resets_at BIGINT,
    limited BIGINT NOT NULL DEFAULT 0,
    observed_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, agent, window_name)
);
