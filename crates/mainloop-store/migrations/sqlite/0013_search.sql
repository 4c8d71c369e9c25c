-- Full-text search over the user's history. One FTS5 table: `title` and `body` hold the
-- words searched; `tags` holds the row's user, kind, task and project as one token each
-- (`u<user id without dashes>`, `k<kind>`, `t<task id…>`, `p<project id…>`), so that the
-- filters are lookups in the index (a query only ever matches words in `title` and
-- `body`); the rest is read back to filter by date and to link.
-- The store's write paths add rows in the transaction of the write they index; this
-- migration indexes what was written before it, with the same words where SQL can
-- reach them (see each INSERT below).
CREATE VIRTUAL TABLE search_index USING fts5(
    title,
    body,
    tags,
    kind UNINDEXED,
    ref_id UNINDEXED,
    user_id UNINDEXED,
    task_id UNINDEXED,
    project_id UNINDEXED,
    created_at UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '3'
);

-- Rows that a later write replaces (a round of questions once answered, a plan once
-- its feedback is recorded), found by what they index: FTS5 cannot look up an
-- unindexed column without reading every row.
-- A 3-character prefix has an index of its own: the last word of a query is a prefix
-- (from 3 characters), and short prefixes would otherwise merge many words' lists.

CREATE TABLE search_keys (
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    doc INTEGER NOT NULL,
    PRIMARY KEY (kind, ref_id)
) WITHOUT ROWID;

-- Messages of the main thread: the user's and the assistant's words, not tool results.
INSERT INTO search_index (title, body, kind, ref_id, user_id, task_id, project_id, created_at, tags)
SELECT '', m.text, 'message', m.id, m.user_id, m.task_id,
       (SELECT t.project_id FROM tasks t WHERE t.id = m.task_id), m.created_at,
       'u' || replace(m.user_id, '-', '') || ' kmessage' || COALESCE(' t' || replace(m.task_id, '-', ''), '') || COALESCE(' p' || replace((SELECT t.project_id FROM tasks t WHERE t.id = m.task_id), '-', ''), '')
FROM messages m
WHERE m.kind = 'text' AND m.role IN ('user', 'assistant') AND trim(m.text) <> '';

-- Task descriptions: the first line is the title, the rest the body.
INSERT INTO search_index (title, body, kind, ref_id, user_id, task_id, project_id, created_at, tags)
SELECT CASE WHEN instr(description, char(10)) > 0
            THEN substr(description, 1, instr(description, char(10)) - 1) ELSE description END,
       CASE WHEN instr(description, char(10)) > 0
            THEN substr(description, instr(description, char(10)) + 1) ELSE '' END,
       'task', id, user_id, id, project_id, created_at,
       'u' || replace(user_id, '-', '') || ' ktask' || COALESCE(' t' || replace(id, '-', ''), '') || COALESCE(' p' || replace(project_id, '-', ''), '')
FROM tasks;

-- The current round of questions (earlier rounds were not kept): every question's
-- header, text and options, then every answer's words. Numbered 1.
INSERT INTO search_index (title, body, kind, ref_id, user_id, task_id, project_id, created_at, tags)
SELECT '',
       COALESCE((SELECT group_concat(q.value, char(10)) FROM json_tree(t.questions) q
                 WHERE q.type = 'text' AND q.key IN ('header', 'question', 'label', 'description')), '')
       || char(10) ||
       COALESCE((SELECT group_concat(a.value, ' ') FROM json_tree(t.answers) a
                 WHERE a.type = 'text'), ''),
       'question', t.id || ':1', t.user_id, t.id, t.project_id, t.updated_at,
       'u' || replace(t.user_id, '-', '') || ' kquestion' || COALESCE(' t' || replace(t.id, '-', ''), '') || COALESCE(' p' || replace(t.project_id, '-', ''), '')
FROM tasks t
WHERE json_valid(t.questions) AND t.questions <> '[]'
  AND (t.answers IS NULL OR json_valid(t.answers));
INSERT INTO search_keys (kind, ref_id, doc)
SELECT kind, ref_id, rowid FROM search_index WHERE kind = 'question';

-- Every plan revision: its first line is the title, the rest and the feedback the body.
INSERT INTO search_index (title, body, kind, ref_id, user_id, task_id, project_id, created_at, tags)
SELECT CASE WHEN instr(p.plan, char(10)) > 0
            THEN substr(p.plan, 1, instr(p.plan, char(10)) - 1) ELSE p.plan END,
       CASE WHEN instr(p.plan, char(10)) > 0
            THEN substr(p.plan, instr(p.plan, char(10)) + 1) ELSE '' END
       || char(10) || COALESCE(p.feedback, ''),
       'plan', p.task_id || ':' || p.revision, t.user_id, p.task_id, t.project_id, p.created_at,
       'u' || replace(t.user_id, '-', '') || ' kplan' || COALESCE(' t' || replace(p.task_id, '-', ''), '') || COALESCE(' p' || replace(t.project_id, '-', ''), '')
FROM plan_revisions p JOIN tasks t ON t.id = p.task_id;
INSERT INTO search_keys (kind, ref_id, doc)
SELECT kind, ref_id, rowid FROM search_index WHERE kind = 'plan';

-- Transcripts: the payload's word fields by name (text, a tool's name and input summary,
-- a result's summary, a plan, a final result, an error and its stderr, the checks'
-- command and output, and the questions' words), cut at 4,000 characters like the
-- write path's. Entries that are not JSON, and kinds without words, are left out.
INSERT INTO search_index (title, body, kind, ref_id, user_id, task_id, project_id, created_at, tags)
SELECT '', substr(w.words, 1, 4000), 'transcript', w.task_id || ':' || w.seq,
       t.user_id, w.task_id, t.project_id, w.created_at,
       'u' || replace(t.user_id, '-', '') || ' ktranscript' || COALESCE(' t' || replace(w.task_id, '-', ''), '') || COALESCE(' p' || replace(t.project_id, '-', ''), '')
FROM (
    SELECT r.task_id, r.seq, r.created_at, trim(
           COALESCE(json_extract(r.payload, '$.text') || ' ', '')
        || COALESCE(json_extract(r.payload, '$.name') || ' ', '')
        || COALESCE(json_extract(r.payload, '$.summary') || ' ', '')
        || COALESCE(json_extract(r.payload, '$.plan') || ' ', '')
        || COALESCE(json_extract(r.payload, '$.result') || ' ', '')
        || COALESCE(json_extract(r.payload, '$.stderr') || ' ', '')
        || COALESCE(json_extract(r.payload, '$.command') || ' ', '')
        || COALESCE(json_extract(r.payload, '$.output') || ' ', '')
        || COALESCE((SELECT group_concat(q.value, ' ') FROM json_tree(r.payload, '$.questions') q
                     WHERE q.type = 'text' AND q.key IN ('header', 'question', 'label', 'description')), '')
    ) AS words
    FROM transcript r
    WHERE json_valid(r.payload) AND json_type(r.payload) = 'object'
      AND r.kind IN ('text', 'tool_call', 'tool_result', 'question', 'plan', 'finished',
                     'error', 'status', 'checks')
) w JOIN tasks t ON t.id = w.task_id
WHERE w.words <> '';
