-- Which runner a task's run is placed on. `epoch` grows by one with every lease of the
-- task, so a runner that lost its lease (replaced, or released) is told apart from the
-- one holding it now. Releasing clears `runner_id` and keeps the row, so the next lease
-- continues the task's epochs instead of starting again at 1: a stale holder's epoch
-- never comes back.
CREATE TABLE run_leases (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id),
    runner_id TEXT REFERENCES runners(id),
    epoch INTEGER NOT NULL,
    placed_at INTEGER NOT NULL
);
CREATE INDEX run_leases_runner ON run_leases (runner_id);
