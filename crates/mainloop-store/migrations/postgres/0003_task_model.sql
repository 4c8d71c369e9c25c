-- A task may name the model its agent runs (`--model`); NULL means the configured default.
ALTER TABLE tasks ADD COLUMN model TEXT;
