//! Full-text search: the index rows each write path adds in its own transaction
//! ([`Tx`]'s `index_*` methods), the words each kind of content is found by, and
//! [`Store::search`] — ranked hits, scoped to their user, with plain-text snippets and
//! the matched words' offsets. Queries reach the database only as bound parameters built
//! from [`SearchQuery::terms`] (letters, digits and `_`), never as user text.

mod text;
mod vocabulary;

use crate::{Backend, Result, Store, Tx, parse};
use mainloop_domain::notes::Note;
use mainloop_domain::records::Task;
use mainloop_domain::search::{SearchHit, SearchKind, SearchQuery};
use mainloop_domain::transcript::TranscriptEntry;
use mainloop_domain::{NoteId, ProjectId, TaskId, Timestamp, UserId};
use sqlx::Row;
use std::collections::HashMap;
use text::{
    BODY_CHARS, CANDIDATES, TRANSCRIPT_BODY_CHARS, answer_words, clean, fts5_match, hit_title,
    params, question_words, score, snippet, split_title, tags, transcript_words, tsquery,
};
use vocabulary::expandable;

/// One row of the index.
struct Doc<'a> {
    kind: SearchKind,
    ref_id: String,
    user: UserId,
    task: Option<TaskId>,
    project: Option<ProjectId>,
    created_at: Timestamp,
    title: &'a str,
    body: &'a str,
}

impl Tx {
    fn backend(&mut self) -> Backend {
        if self.conn().backend_name() == "SQLite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// Adds `doc` to the index. Kinds a later write rewrites (questions once answered, a
    /// plan once its feedback is recorded) replace their earlier row and keep its time.
    async fn index(&mut self, doc: &Doc<'_>) -> Result<()> {
        let sqlite = self.backend() == Backend::Sqlite;
        let replaces = matches!(
            doc.kind,
            SearchKind::Question | SearchKind::Plan | SearchKind::Note
        );
        let mut created_at = doc.created_at.as_millis();
        if replaces {
            let old = if sqlite {
                sqlx::query(
                    "SELECT s.rowid AS doc, s.created_at AS created_at FROM search_keys k \
                     JOIN search_index s ON s.rowid = k.doc WHERE k.kind = $1 AND k.ref_id = $2",
                )
            } else {
                sqlx::query(
                    "SELECT id AS doc, created_at FROM search_index WHERE kind = $1 AND ref_id = $2",
                )
            }
            .bind(doc.kind.as_str())
            .bind(&doc.ref_id)
            .fetch_optional(self.conn())
            .await?;
            if let Some(old) = old {
                created_at = old.try_get("created_at")?;
                let id: i64 = old.try_get("doc")?;
                sqlx::query(if sqlite {
                    "DELETE FROM search_index WHERE rowid = $1"
                } else {
                    "DELETE FROM search_index WHERE id = $1"
                })
                .bind(id)
                .execute(self.conn())
                .await?;
            }
        }
        let (title, body) = (clean(doc.title, BODY_CHARS), clean(doc.body, BODY_CHARS));
        if sqlite {
            self.add_vocabulary(&title, &body).await?;
        }
        let insert = sqlx::query(
            if sqlite {
                "INSERT INTO search_index (title, body, kind, ref_id, user_id, task_id, project_id, created_at, tags) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            } else {
                "INSERT INTO search_index (title, body, kind, ref_id, user_id, task_id, project_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            },
        )
        .bind(title)
        .bind(body)
        .bind(doc.kind.as_str())
        .bind(&doc.ref_id)
        .bind(doc.user.to_string())
        .bind(doc.task.map(|t| t.to_string()))
        .bind(doc.project.map(|p| p.to_string()))
        .bind(created_at);
        // PostgreSQL filters through its own indexes; SQLite through these tokens.
        let insert = if sqlite {
            insert.bind(tags(doc.kind, doc.user, doc.task, doc.project, created_at))
        } else {
            insert
        };
        insert.execute(self.conn()).await?;
        if replaces && sqlite {
            sqlx::query(
                "INSERT INTO search_keys (kind, ref_id, doc) VALUES ($1, $2, last_insert_rowid()) \
                 ON CONFLICT (kind, ref_id) DO UPDATE SET doc = excluded.doc",
            )
            .bind(doc.kind.as_str())
            .bind(&doc.ref_id)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// Indexes a note as it now reads (an edit replaces its row).
    pub(crate) async fn index_note(&mut self, user: UserId, note: &Note) -> Result<()> {
        let (title, body) = split_title(&note.text);
        self.index(&Doc {
            kind: SearchKind::Note,
            ref_id: note.id.to_string(),
            user,
            task: None,
            project: None,
            created_at: note.created_at,
            title,
            body,
        })
        .await
    }

    /// Removes a deleted note from the index.
    pub(crate) async fn unindex_note(&mut self, id: NoteId) -> Result<()> {
        let kind = SearchKind::Note.as_str();
        if self.backend() == Backend::Sqlite {
            // The FTS table is found by rowid; its unindexed columns would need a scan.
            sqlx::query(
                "DELETE FROM search_index WHERE rowid = \
                 (SELECT doc FROM search_keys WHERE kind = $1 AND ref_id = $2)",
            )
            .bind(kind)
            .bind(id.to_string())
            .execute(self.conn())
            .await?;
            sqlx::query("DELETE FROM search_keys WHERE kind = $1 AND ref_id = $2")
                .bind(kind)
                .bind(id.to_string())
                .execute(self.conn())
                .await?;
        } else {
            sqlx::query("DELETE FROM search_index WHERE kind = $1 AND ref_id = $2")
                .bind(kind)
                .bind(id.to_string())
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Indexes a main-thread message's words (the user's and the assistant's).
    pub(crate) async fn index_message(
        &mut self,
        user: UserId,
        id: &str,
        task: Option<TaskId>,
        text: &str,
        now: Timestamp,
    ) -> Result<()> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let project = match task {
            Some(t) => self.task_project(t).await?,
            None => None,
        };
        self.index(&Doc {
            kind: SearchKind::Message,
            ref_id: id.to_owned(),
            user,
            task,
            project,
            created_at: now,
            title: "",
            body: text,
        })
        .await
    }

    /// Indexes a new task's description.
    pub(crate) async fn index_task(&mut self, user: UserId, task: &Task) -> Result<()> {
        let (title, body) = split_title(&task.description);
        self.index(&Doc {
            kind: SearchKind::Task,
            ref_id: task.id.to_string(),
            user,
            task: Some(task.id),
            project: Some(task.project_id),
            created_at: task.created_at,
            title,
            body,
        })
        .await
    }

    /// Indexes a task's questions with their answers, when either changed from what was
    /// stored (`old_questions`, `old_answers`: the columns as read before the save). A
    /// new round is the next number; answers rewrite the latest round.
    pub(crate) async fn index_questions(
        &mut self,
        user: UserId,
        task: &Task,
        old_questions: &str,
        old_answers: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        if task.questions.is_empty() {
            return Ok(());
        }
        let questions = serde_json::to_string(&task.questions)?;
        let answers = task
            .answers
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let new_round = questions != old_questions;
        if !new_round && answers.as_deref() == old_answers {
            return Ok(());
        }
        let rounds = self.question_rounds(task.id).await?;
        let round = if new_round || rounds == 0 {
            rounds + 1
        } else {
            rounds
        };
        let mut body = question_words(&task.questions);
        if let Some(a) = &task.answers {
            body.push('\n');
            body.push_str(&answer_words(a));
        }
        self.index(&Doc {
            kind: SearchKind::Question,
            ref_id: format!("{}:{round}", task.id),
            user,
            task: Some(task.id),
            project: Some(task.project_id),
            created_at: now,
            title: "",
            body: &body,
        })
        .await
    }

    /// How many rounds of questions a task has had indexed.
    async fn question_rounds(&mut self, task: TaskId) -> Result<i64> {
        // `<task id>:` and `<task id>;` bound every `<task id>:<n>` (';' follows ':').
        let sql = if self.backend() == Backend::Sqlite {
            "SELECT COUNT(*) FROM search_keys WHERE kind = 'question' AND ref_id > $1 AND ref_id < $2"
        } else {
            "SELECT COUNT(*) FROM search_index WHERE kind = 'question' AND ref_id > $1 AND ref_id < $2"
        };
        Ok(sqlx::query_scalar(sql)
            .bind(format!("{task}:"))
            .bind(format!("{task};"))
            .fetch_one(self.conn())
            .await?)
    }

    /// Indexes a plan revision with the feedback that asked for the next, if any.
    pub(crate) async fn index_plan(
        &mut self,
        task: TaskId,
        revision: i64,
        plan: &str,
        feedback: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let Some((user, project)) = self.task_owner(task).await? else {
            return Ok(());
        };
        let (title, rest) = split_title(plan);
        let body = match feedback {
            Some(f) => format!("{rest}\n{f}"),
            None => rest.to_owned(),
        };
        self.index(&Doc {
            kind: SearchKind::Plan,
            ref_id: format!("{task}:{revision}"),
            user,
            task: Some(task),
            project: Some(project),
            created_at: now,
            title,
            body: &body,
        })
        .await
    }

    /// Indexes a transcript entry's words (see [`transcript_words`]), cut at
    /// [`TRANSCRIPT_BODY_CHARS`].
    pub(crate) async fn index_transcript(
        &mut self,
        owner: (UserId, ProjectId),
        task: TaskId,
        seq: i64,
        kind: &str,
        payload: &serde_json::Value,
        now: Timestamp,
    ) -> Result<()> {
        let words = transcript_words(&TranscriptEntry::from_stored(kind, payload.clone()));
        if words.is_empty() {
            return Ok(());
        }
        let body = clean(&words, TRANSCRIPT_BODY_CHARS);
        self.index(&Doc {
            kind: SearchKind::Transcript,
            ref_id: format!("{task}:{seq}"),
            user: owner.0,
            task: Some(task),
            project: Some(owner.1),
            created_at: now,
            title: "",
            body: &body,
        })
        .await
    }

    /// Indexes the feedback of a review that asked for changes, numbered by the task's
    /// version after that transition (unique per task, increasing).
    ///
    /// # Errors
    /// On database failure.
    pub async fn index_review(
        &mut self,
        user: UserId,
        task: &Task,
        feedback: &str,
        now: Timestamp,
    ) -> Result<()> {
        if feedback.trim().is_empty() {
            return Ok(());
        }
        self.index(&Doc {
            kind: SearchKind::Review,
            ref_id: format!("{}:{}", task.id, task.version),
            user,
            task: Some(task.id),
            project: Some(task.project_id),
            created_at: now,
            title: "",
            body: feedback,
        })
        .await
    }

    /// Indexes a digest that says something, under its title.
    pub(crate) async fn index_digest(
        &mut self,
        user: UserId,
        d: &mainloop_domain::digest::Digest,
    ) -> Result<()> {
        self.index(&Doc {
            kind: SearchKind::Digest,
            ref_id: d.id.to_string(),
            user,
            task: None,
            project: None,
            created_at: d.created_at,
            title: &d.title,
            body: &d.text,
        })
        .await
    }

    async fn task_project(&mut self, task: TaskId) -> Result<Option<ProjectId>> {
        Ok(self.task_owner(task).await?.map(|(_, p)| p))
    }

    async fn task_owner(&mut self, task: TaskId) -> Result<Option<(UserId, ProjectId)>> {
        let row = sqlx::query("SELECT user_id, project_id FROM tasks WHERE id = $1")
            .bind(task.to_string())
            .fetch_optional(self.conn())
            .await?;
        row.map(|r| {
            Ok((
                parse(&r.try_get::<String, _>("user_id")?, "user id")?,
                parse(&r.try_get::<String, _>("project_id")?, "project id")?,
            ))
        })
        .transpose()
    }
}

/// A bound value of a search query.
enum Bind {
    Text(String),
    Int(i64),
}

/// The `WHERE` conditions after the match, and their values (numbered from `first`).
/// SQLite finds user, kinds, task and project through the match itself, and narrows
/// a date range there to its days (see [`text::date_tokens`]).
fn filters(user: UserId, q: &SearchQuery, first: usize, sqlite: bool) -> (String, Vec<Bind>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    let mut add = |cond: &str, b: Bind| {
        binds.push(b);
        sql.push_str(&format!(" AND {cond} ${}", first + binds.len() - 1));
    };
    add("user_id =", Bind::Text(user.to_string()));
    if !sqlite {
        if let Some(project) = q.project {
            add("project_id =", Bind::Text(project.to_string()));
        }
        if let Some(task) = q.task {
            add("task_id =", Bind::Text(task.to_string()));
        }
    }
    if let Some(from) = q.from {
        add("created_at >=", Bind::Int(from.as_millis()));
    }
    if let Some(to) = q.to {
        add("created_at <", Bind::Int(to.as_millis()));
    }
    if !sqlite && !q.kinds.is_empty() {
        let list: Vec<String> = q
            .kinds
            .iter()
            .map(|k| {
                binds.push(Bind::Text(k.as_str().to_owned()));
                format!("${}", first + binds.len() - 1)
            })
            .collect();
        sql.push_str(&format!(" AND kind IN ({})", list.join(", ")));
    }
    (sql, binds)
}

/// A row found, before it is ranked.
struct Candidate {
    doc: i64,
    kind: SearchKind,
    ref_id: String,
    task_id: Option<TaskId>,
    created_at: Timestamp,
    score: f64,
    title: String,
    body: String,
}

impl Store {
    /// The user's content matching every term of `q` (the last as a prefix when it has
    /// at least [`text::MIN_PREFIX_CHARS`] characters), best first by [`text::score`] (a title match
    /// above body matches; ties newest first), at most `q.limit`. Of a query matching
    /// more than [`CANDIDATES`] rows, the newest that many are ranked.
    ///
    /// # Errors
    /// On database failure.
    pub async fn search(&self, user: UserId, q: &SearchQuery) -> Result<Vec<SearchHit>> {
        if q.terms.is_empty() || q.limit == 0 {
            return Ok(Vec::new());
        }
        let sqlite = self.backend() == Backend::Sqlite;
        let (filter, binds) = filters(user, q, 2, sqlite);
        let sql = if sqlite {
            format!(
                "SELECT rowid AS doc, kind, ref_id, task_id, created_at, title, body \
                 FROM search_index WHERE search_index MATCH $1{filter} \
                 ORDER BY rowid DESC LIMIT {CANDIDATES}"
            )
        } else {
            format!(
                "SELECT id AS doc, kind, ref_id, task_id, created_at, title, body \
                 FROM search_index WHERE tsv @@ to_tsquery('simple', $1){filter} \
                 ORDER BY created_at DESC, id DESC LIMIT {CANDIDATES}"
            )
        };
        let matcher = if sqlite {
            let expansion = match expandable(&q.terms) {
                Some(prefix) => self.expansion(prefix).await?,
                None => None,
            };
            if expansion.as_ref().is_some_and(Vec::is_empty) {
                // No indexed word starts with the last term.
                return Ok(Vec::new());
            }
            fts5_match(user, q, expansion.as_deref())
        } else {
            tsquery(&q.terms)
        };
        // Planned for these terms each time: how many rows a word matches decides
        // between the word index and the user's rows newest first.
        let mut query = sqlx::query(&sql).bind(matcher).persistent(false);
        for b in binds {
            query = match b {
                Bind::Text(s) => query.bind(s),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut found = rows
            .iter()
            .map(|r| {
                let task_id: Option<String> = r.try_get("task_id")?;
                let title: String = r.try_get("title")?;
                let body: String = r.try_get("body")?;
                Ok(Candidate {
                    doc: r.try_get("doc")?,
                    kind: parse(&r.try_get::<String, _>("kind")?, "search kind")?,
                    ref_id: r.try_get("ref_id")?,
                    task_id: task_id.map(|t| parse(&t, "task id")).transpose()?,
                    created_at: Timestamp::from_millis(r.try_get("created_at")?),
                    score: score(&q.terms, &title, &body),
                    title,
                    body,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        found.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.created_at.cmp(&a.created_at))
                .then(b.doc.cmp(&a.doc))
        });
        found.truncate(usize::try_from(q.limit).unwrap_or(usize::MAX));
        let (descriptions, roles) = self.hit_titles(user, &found).await?;
        Ok(found
            .into_iter()
            .map(|c| {
                let (snippet, highlights) = snippet(&q.terms, &c.title, &c.body);
                // A note or digest is titled by its own first line, a task's by the task.
                let own = matches!(c.kind, SearchKind::Note | SearchKind::Digest)
                    .then(|| c.title.clone());
                let description = own
                    .as_ref()
                    .or_else(|| c.task_id.and_then(|t| descriptions.get(&t.to_string())));
                SearchHit {
                    kind: c.kind,
                    title: hit_title(
                        c.kind,
                        roles.get(&c.ref_id).map(String::as_str),
                        description.map(String::as_str),
                    ),
                    id: c.ref_id,
                    task_id: c.task_id,
                    snippet,
                    highlights,
                    created_at: c.created_at,
                }
            })
            .collect())
    }

    /// Refreshes what the database knows of the index's contents: PostgreSQL's
    /// statistics, from which it plans each search (how many rows a word matches).
    /// Autovacuum does this on its own as rows are written; after a bulk load, call it.
    ///
    /// # Errors
    /// On database failure.
    pub async fn analyze_search(&self) -> Result<()> {
        if self.backend() == Backend::Postgres {
            sqlx::query("ANALYZE search_index")
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// The descriptions of the hits' tasks and the roles of the hits' messages.
    async fn hit_titles(
        &self,
        user: UserId,
        found: &[Candidate],
    ) -> Result<(HashMap<String, String>, HashMap<String, String>)> {
        let mut tasks: Vec<String> = found
            .iter()
            .filter_map(|c| c.task_id.map(|t| t.to_string()))
            .collect();
        tasks.sort();
        tasks.dedup();
        let messages: Vec<&str> = found
            .iter()
            .filter(|c| c.kind == SearchKind::Message)
            .map(|c| c.ref_id.as_str())
            .collect();
        let sqlite = self.backend() == Backend::Sqlite;
        let mut out = (HashMap::new(), HashMap::new());
        for (sql, ids, into) in [
            (
                "SELECT id, description AS v FROM tasks",
                tasks.iter().map(String::as_str).collect::<Vec<_>>(),
                &mut out.0,
            ),
            ("SELECT id, role AS v FROM messages", messages, &mut out.1),
        ] {
            if ids.is_empty() {
                continue;
            }
            // Without statistics SQLite guesses that a user has a few rows and would
            // walk all of the user's messages by the user index; `+` leaves it the ids'.
            let user_col = if sqlite { "+user_id" } else { "user_id" };
            let sql = format!(
                "{sql} WHERE {user_col} = $1 AND id IN ({})",
                params(2, ids.len())
            );
            let mut query = sqlx::query(&sql).bind(user.to_string());
            for id in ids {
                query = query.bind(id);
            }
            for r in query.fetch_all(self.pool()).await? {
                into.insert(r.try_get("id")?, r.try_get("v")?);
            }
        }
        Ok(out)
    }
}
