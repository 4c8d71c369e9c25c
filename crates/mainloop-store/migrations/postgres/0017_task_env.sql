-- Each task's prepared environment: the repository's extra variables (a JSON list of
-- [name, value]), the preview command, the database made for it (its name and the URL
-- passed as DATABASE_URL), and whether its setup commands have all passed. Written when
-- the environment is prepared, deleted when the task's environment is released.
CREATE TABLE task_env (
    task_id TEXT PRIMARY KEY,
    vars TEXT NOT NULL,
    preview TEXT,
    database_name TEXT,
    database_url TEXT,
    setup_done BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- The ports each live task holds, `idx` 0 for PORT, 1 for PORT_1, …. A port is held
-- by one task at a time: the primary key is what makes two tasks never share one.
CREATE TABLE task_ports (
    port BIGINT PRIMARY KEY,
    task_id TEXT NOT NULL,
    idx BIGINT NOT NULL
);
CREATE INDEX task_ports_task ON task_ports (task_id, idx);
