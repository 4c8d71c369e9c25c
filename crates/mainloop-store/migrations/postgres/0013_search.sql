-- Full-text search over the user's history. `title` and `body` are searched through a
-- generated `tsvector` (the `simple` configuration: no stemming, no stop words, like
-- SQLite's tokenizer; the title weighted A, the body B), the rest filter and link.
-- The store's write paths add rows in the transaction of the write they index; this
-- migration indexes what was written before it, with the same words where SQL can
-- reach them (see each INSERT below).
CREATE TABLE search_index (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    task_id TEXT,
    project_id TEXT,
    created_at BIGINT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', body), 'B')
    ) STORED
);
CREATE INDEX search_index_tsv ON search_index USING GIN (tsv);
CREATE INDEX search_index_ref ON search_index (kind, ref_id);
CREATE INDEX search_index_user ON search_index (user_id, created_at);
CREATE INDEX search_index_task ON search_index (task_id);
CREATE INDEX search_index_project ON search_index (project_id);

-- Text that is not JSON (old transcript payloads may be) reads as no words.
CREATE FUNCTION pg_temp.search_json(t TEXT) RETURNS JSONB LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;

-- The words of questions (header, text, options) in a JSON array of questions.
CREATE FUNCTION pg_temp.search_question_words(q JSONB) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(string_agg(v #>> '{}', E'\n'), '') FROM (
        SELECT jsonb_path_query(q, 'lax $[*].header') AS v
        UNION ALL SELECT jsonb_path_query(q, 'lax $[*].question')
        UNION ALL SELECT jsonb_path_query(q, 'lax $[*].options[*].label')
        UNION ALL SELECT jsonb_path_query(q, 'lax $[*].options[*].description')
    ) w WHERE jsonb_typeof(v) = 'string'
$$;

-- Messages of the main thread: the user's and the assistant's words, not tool results.
INSERT INTO search_index (kind, ref_id, user_id, task_id, project_id, created_at, title, body)
SELECT 'message', m.id, m.user_id, m.task_id,
       (SELECT t.project_id FROM tasks t WHERE t.id = m.task_id), m.created_at, '', m.text
FROM messages m
WHERE m.kind = 'text' AND m.role IN ('user', 'assistant') AND btrim(m.text) <> '';

-- Task descriptions: the first line is the title, the rest the body.
INSERT INTO search_index (kind, ref_id, user_id, task_id, project_id, created_at, title, body)
SELECT 'task', id, user_id, id, project_id, created_at,
       split_part(description, E'\n', 1),
       CASE WHEN strpos(description, E'\n') > 0
            THEN substr(description, strpos(description, E'\n') + 1) ELSE '' END
FROM tasks;

-- The current round of questions (earlier rounds were not kept): every question's
-- header, text and options, then every answer's words. Numbered 1.
INSERT INTO search_index (kind, ref_id, user_id, task_id, project_id, created_at, title, body)
SELECT 'question', t.id || ':1', t.user_id, t.id, t.project_id, t.updated_at, '',
       pg_temp.search_question_words(pg_temp.search_json(t.questions)) || E'\n' ||
       COALESCE((SELECT string_agg(v #>> '{}', ' ')
                 FROM jsonb_path_query(pg_temp.search_json(t.answers), 'strict $.**') v
                 WHERE jsonb_typeof(v) = 'string'), '')
FROM tasks t
WHERE jsonb_typeof(pg_temp.search_json(t.questions)) = 'array'
  AND jsonb_array_length(pg_temp.search_json(t.questions)) > 0;

-- Every plan revision: its first line is the title, the rest and the feedback the body.
INSERT INTO search_index (kind, ref_id, user_id, task_id, project_id, created_at, title, body)
SELECT 'plan', p.task_id || ':' || p.revision, t.user_id, p.task_id, t.project_id, p.created_at,
       split_part(p.plan, E'\n', 1),
       CASE WHEN strpos(p.plan, E'\n') > 0 THEN substr(p.plan, strpos(p.plan, E'\n') + 1) ELSE '' END
       || E'\n' || COALESCE(p.feedback, '')
FROM plan_revisions p JOIN tasks t ON t.id = p.task_id;

-- Transcripts: the payload's word fields by name (text, a tool's name and input summary,
-- a result's summary, a plan, a final result, an error and its stderr, the checks'
-- command and output, and the questions' words), cut at 4,000 characters like the
-- write path's. Entries that are not JSON, and kinds without words, are left out.
INSERT INTO search_index (kind, ref_id, user_id, task_id, project_id, created_at, title, body)
SELECT 'transcript', w.task_id || ':' || w.seq, t.user_id, w.task_id, t.project_id,
       w.created_at, '', left(w.words, 4000)
FROM (
    SELECT r.task_id, r.seq, r.created_at, btrim(
           COALESCE((p ->> 'text') || ' ', '')
        || COALESCE((p ->> 'name') || ' ', '')
        || COALESCE((p ->> 'summary') || ' ', '')
        || COALESCE((p ->> 'plan') || ' ', '')
        || COALESCE((p ->> 'result') || ' ', '')
        || COALESCE((p ->> 'stderr') || ' ', '')
        || COALESCE((p ->> 'command') || ' ', '')
        || COALESCE((p ->> 'output') || ' ', '')
        || CASE WHEN jsonb_typeof(p -> 'questions') = 'array'
                THEN replace(pg_temp.search_question_words(p -> 'questions'), E'\n', ' ') ELSE '' END
    ) AS words
    FROM (SELECT task_id, seq, created_at, kind, pg_temp.search_json(payload) AS p FROM transcript) r
    WHERE jsonb_typeof(r.p) = 'object'
      AND r.kind IN ('text', 'tool_call', 'tool_result', 'question', 'plan', 'finished',
                     'error', 'status', 'checks')
) w JOIN tasks t ON t.id = w.task_id
WHERE w.words <> '';
