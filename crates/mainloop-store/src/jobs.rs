//! The durable job queue behind the transactional outbox: jobs are inserted in the same
//! transaction as the state change that causes them, keyed so a job is never enqueued
//! twice, claimed with a lease, retried with backoff, and reclaimed when a lease expires.
//! Jobs sharing a `lane` run one at a time, oldest first (e.g. one user's chat turns).

use crate::{Result, Store, Tx, parse};
use mainloop_domain::{Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::fmt::Write as _;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Done,
    Failed,
}

impl JobState {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "running" => Ok(Self::Running),
            "done" => Ok(Self::Done),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown job state '{other}'")),
        }
    }
}

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Idempotency key: enqueueing an existing key does nothing.
    pub key: String,
    pub kind: String,
    pub user_id: Option<UserId>,
    pub lane: Option<String>,
    pub payload: serde_json::Value,
    pub run_after: Timestamp,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub user_id: Option<UserId>,
    pub lane: Option<String>,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// Claims so far, including the current one.
    pub attempts: u32,
    pub run_after: Timestamp,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

const JOB_COLS: &str = "id, key, kind, user_id, lane, payload, state, attempts, run_after, \
                        lease_owner, lease_until, last_error, created_at";

fn job_from_row(row: &AnyRow) -> Result<Job> {
    let user_id: Option<String> = row.try_get("user_id")?;
    let payload: String = row.try_get("payload")?;
    Ok(Job {
        id: row.try_get("id")?,
        key: row.try_get("key")?,
        kind: row.try_get("kind")?,
        user_id: user_id.map(|u| parse(&u, "user id")).transpose()?,
        lane: row.try_get("lane")?,
        payload: serde_json::from_str(&payload)?,
        state: parse(&row.try_get::<String, _>("state")?, "job state")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        run_after: Timestamp::from_millis(row.try_get("run_after")?),
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row
            .try_get::<Option<i64>, _>("lease_until")?
            .map(Timestamp::from_millis),
        last_error: row.try_get("last_error")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

impl Tx {
    /// Enqueues a job unless one with the same key exists. Returns the new job's id, or
    /// `None` when the key was already taken.
    ///
    /// # Errors
    /// On database failure.
    pub async fn enqueue(&mut self, job: &NewJob, now: Timestamp) -> Result<Option<i64>> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO jobs (key, kind, user_id, lane, payload, state, run_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) \
             ON CONFLICT (key) DO NOTHING RETURNING id",
        )
        .bind(&job.key)
        .bind(&job.kind)
        .bind(job.user_id.map(|u| u.to_string()))
        .bind(&job.lane)
        .bind(job.payload.to_string())
        .bind(job.run_after.as_millis())
        .bind(now.as_millis())
        .fetch_optional(self.conn())
        .await?;
        Ok(id)
    }

    /// Marks a claimed job done, in the same transaction as the work's own writes, so
    /// the work and its completion commit together. Returns false if the lease was lost.
    ///
    /// # Errors
    /// On database failure.
    pub async fn complete_job(&mut self, id: i64, owner: &str, now: Timestamp) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $1, lease_owner = NULL, lease_until = NULL \
             WHERE id = $2 AND state = 'running' AND lease_owner = $3",
        )
        .bind(now.as_millis())
        .bind(id)
        .bind(owner)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

impl Store {
    /// Claims the next due job of one of `kinds` for `owner` until `lease_until`.
    /// Expired leases count as due, which is how jobs of a crashed process come back.
    ///
    /// # Errors
    /// On database failure.
    pub async fn claim_job(
        &self,
        kinds: &[&str],
        owner: &str,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Job>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let mut placeholders = String::new();
        for i in 0..kinds.len() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(placeholders, "{sep}${}", i + 4);
        }
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, \
                 attempts = attempts + 1 \
             WHERE id = ( \
                 SELECT j.id FROM jobs j \
                 WHERE j.kind IN ({placeholders}) \
                   AND ((j.state = 'pending' AND j.run_after <= $3) \
                        OR (j.state = 'running' AND j.lease_until < $3)) \
                   AND (j.lane IS NULL OR NOT EXISTS ( \
                        SELECT 1 FROM jobs o WHERE o.lane = j.lane AND o.id < j.id \
                          AND o.state IN ('pending', 'running'))) \
                 ORDER BY j.run_after, j.id LIMIT 1) \
               AND (state = 'pending' OR (state = 'running' AND lease_until < $3)) \
             RETURNING {JOB_COLS}"
        );
        let mut q = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until.as_millis())
            .bind(now.as_millis());
        for k in kinds {
            q = q.bind(*k);
        }
        // A claim lost to a power failure only means the job runs again.
        let mut tx = self.begin_relaxed().await?;
        let row = q.fetch_optional(tx.conn()).await?;
        tx.commit().await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Extends a lease the owner still holds. Returns false when it was lost.
    ///
    /// # Errors
    /// On database failure.
    pub async fn extend_lease(&self, id: i64, owner: &str, until: Timestamp) -> Result<bool> {
        let mut tx = self.begin_relaxed().await?;
        let n = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND state = 'running' AND lease_owner = $3",
        )
        .bind(until.as_millis())
        .bind(id)
        .bind(owner)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Marks a claimed job done on its own.
    ///
    /// # Errors
    /// On database failure.
    pub async fn complete_job(&self, id: i64, owner: &str, now: Timestamp) -> Result<bool> {
        let mut tx = self.begin().await?;
        let ok = tx.complete_job(id, owner, now).await?;
        tx.commit().await?;
        Ok(ok)
    }

    /// Records a failed attempt: back to pending at `retry_at`, or failed for good when
    /// `retry_at` is `None`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn fail_job(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool> {
        let (state, run_after, finished) = match retry_at {
            Some(at) => (JobState::Pending, at.as_millis(), None),
            None => (JobState::Failed, now.as_millis(), Some(now.as_millis())),
        };
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = $1, run_after = $2, finished_at = $3, last_error = $4, \
                 lease_owner = NULL, lease_until = NULL \
             WHERE id = $5 AND state = 'running' AND lease_owner = $6",
        )
        .bind(state.as_str())
        .bind(run_after)
        .bind(finished)
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Returns every running job to pending. Only for a single-process deployment at
    /// start-up (SQLite, guarded by the data-dir lock), where any running job belongs to
    /// a process that died.
    ///
    /// # Errors
    /// On database failure.
    pub async fn reclaim_all_running(&self) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE state = 'running'",
        )
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Returns running jobs whose lease expired to pending.
    ///
    /// # Errors
    /// On database failure.
    pub async fn reclaim_expired(&self, now: Timestamp) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE state = 'running' AND lease_until < $1",
        )
        .bind(now.as_millis())
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// The job with this key.
    ///
    /// # Errors
    /// On database failure.
    pub async fn job_by_key(&self, key: &str) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE key = $1"))
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// When the earliest unfinished job of one of `kinds` becomes due (or its lease
    /// expires), so a dispatcher worker can sleep until then.
    ///
    /// # Errors
    /// On database failure.
    pub async fn next_due(&self, kinds: &[&str]) -> Result<Option<Timestamp>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let list: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 1)).collect();
        let sql = format!(
            "SELECT MIN(CASE WHEN state = 'pending' THEN run_after ELSE lease_until END) FROM jobs \
             WHERE state IN ('pending', 'running') AND kind IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query_scalar(&sql);
        for k in kinds {
            q = q.bind(*k);
        }
        let at: Option<i64> = q.fetch_one(self.pool()).await?;
        Ok(at.map(Timestamp::from_millis))
    }

    /// Counts jobs by state (for health and tests).
    ///
    /// # Errors
    /// On database failure.
    pub async fn count_jobs(&self, state: JobState) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = $1")
                .bind(state.as_str())
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Counts unfinished (pending or running) jobs of one kind.
    ///
    /// # Errors
    /// On database failure.
    pub async fn count_unfinished(&self, kind: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE kind = $1 AND state IN ('pending', 'running')",
        )
        .bind(kind)
        .fetch_one(self.pool())
        .await?)
    }
}
