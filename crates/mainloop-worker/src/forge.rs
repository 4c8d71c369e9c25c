//! The lifecycle on a forge (GitHub): the plan issue with the worker's questions and plan
//! (answered there or in the app, whichever is first), the pushed branch and draft pull
//! request, CI watched with conditional requests, ready for review, review feedback sent
//! back to the agent, and merge or close detected. The task state machine is the same as
//! for local work; this module mirrors it outward and reads decisions back in.
//!
//! Two job kinds: `forge.sync` (enqueued with every transition of a forge task) brings
//! the forge up to date with the task's state; `forge.watch` polls what the task waits
//! for and reschedules itself. Both read and write the task's `task_forge` record under
//! a per-task lock, so they never overwrite each other's bookkeeping.

use crate::Runtime;
use crate::steps::{self, apply, fail, load, retry, status};
use mainloop_domain::records::Task;
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_domain::{TaskId, Timestamp, UserId};
use mainloop_engine::{EngineError, JobContext, JobError, PlanAction};
use mainloop_forge::replies::{
    ParsedAnswers, PlanReply, parse_answers, parse_plan_reply, plan_comment, questions_comment,
    review_feedback,
};
use mainloop_forge::{
    CiStatus, Cursor, FeedbackCursor, Forge, ForgeError, NewPullRequest, PrState, PullRequest,
    RepoRef,
};
use mainloop_store::{NewJob, TaskForge};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Kind of the job that mirrors a transition onto the forge.
pub const SYNC_JOB: &str = "forge.sync";
/// Kind of the job that polls the forge for what a task waits on.
pub const WATCH_JOB: &str = "forge.watch";

/// Appended to every comment mainloop posts, so its own words are never read back as a
/// human's answer or feedback.
pub const MARKER: &str = "<!-- mainloop -->";

/// How the runtime reaches the forge, and its timings.
#[derive(Clone, Debug)]
pub struct ForgeSettings {
    pub forge: Arc<dyn Forge>,
    /// The web host repository URLs name (`github.com`).
    pub web_host: String,
    /// Clone/push URL template with `{owner}` and `{name}`.
    pub git_url: String,
    pub label: String,
    /// The handle a comment mentions to ask for changes (`@mainloop`).
    pub mention: String,
    pub poll_interval: Duration,
    pub ci_pending_timeout: Duration,
    pub ci_appear_timeout: Duration,
    /// Bytes of each failing job's log sent to the agent.
    pub log_tail_bytes: usize,
    /// Logins whose replies count besides the token's own account.
    pub trusted_users: Vec<String>,
}

impl ForgeSettings {
    /// The clone and push URL of a repository.
    #[must_use]
    pub fn git_url_for(&self, repo: &RepoRef) -> String {
        self.git_url
            .replace("{owner}", &repo.owner)
            .replace("{name}", &repo.name)
    }
}

/// The worker's bookkeeping for one task, kept as the `data` of its `task_forge` record.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Mirror {
    issue_url: Option<String>,
    /// The question set last posted (their ids and texts), so each set is posted once.
    questions_posted: Option<String>,
    /// Answers arrived on the forge (so the app-side acknowledgement is not posted).
    answered_on_forge: bool,
    answers_acknowledged: Option<String>,
    plan_comment: Option<u64>,
    plan_posted: Option<String>,
    plan_decided_on_forge: bool,
    plan_acknowledged: bool,
    issue_cursor: Cursor,
    pr: Option<PullRequest>,
    pushed_sha: Option<String>,
    /// CI is watched for this commit, since this time (ms).
    ci_sha: Option<String>,
    ci_since: Option<i64>,
    no_ci: bool,
    ready_marked: bool,
    review_round_announced: Option<String>,
    feedback_cursor: FeedbackCursor,
    closed: bool,
    failure_posted: Option<String>,
    /// The live watch chain; a watch job of another generation stops.
    watch_gen: u64,
    /// Set while the forge is unreachable, so the outage is reported once.
    outage: Option<String>,
    /// Forge writes begun and not yet recorded (see [`Ctx::intend`]): after a crash, each
    /// is looked up on the forge before it is made again.
    pending: Vec<String>,
    /// The draft pull request is open but not yet announced on the issue.
    draft_unannounced: bool,
    /// The last pushed commit the pull request was told about.
    narrated_sha: Option<String>,
}

struct Ctx<'a> {
    rt: &'a Runtime,
    fs: &'a ForgeSettings,
    user: UserId,
    task: Task,
    repo: RepoRef,
    rec: TaskForge,
    m: Mirror,
    /// The record as stored, which [`Ctx::intend`] extends without saving `m`'s changes.
    stored: TaskForge,
    /// Writes a previous attempt began without recording them (it died meanwhile).
    recovering: Vec<String>,
    /// Writes this attempt began and has not finished.
    open: Vec<String>,
}

/// Unfinished writes remembered at most (the oldest are forgotten first).
const MAX_PENDING: usize = 32;

/// The hidden tag that names one of mainloop's forge writes, so a write whose outcome
/// went unrecorded can be found instead of made twice.
fn key_tag(key: &str) -> String {
    format!("<!-- mainloop-key:{key} -->")
}

/// A short, stable digest of a text for a key (FNV-1a: the same in every build, unlike
/// the standard library's hasher).
fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Ctx<'_> {
    fn f(&self) -> &dyn Forge {
        self.fs.forge.as_ref()
    }

    /// The record with everything done so far. Writes begun and not known to be done
    /// stay pending.
    fn record(&mut self) -> Result<TaskForge, JobError> {
        let mut pending: Vec<String> = Vec::new();
        for key in self.recovering.iter().chain(&self.open) {
            if !pending.contains(key) {
                pending.push(key.clone());
            }
        }
        // A write the task moved past is never looked up again; keep the list short.
        let excess = pending.len().saturating_sub(MAX_PENDING);
        pending.drain(..excess);
        self.m.pending = pending;
        self.rec.data =
            serde_json::to_value(&self.m).map_err(|e| JobError::fatal(e.to_string()))?;
        self.rec.updated_at = mainloop_engine::now();
        Ok(self.rec.clone())
    }

    async fn save(&mut self) -> Result<(), JobError> {
        let rec = self.record()?;
        self.rt
            .inner
            .engine
            .put_task_forge(&rec)
            .await
            .map_err(retry)?;
        self.stored = rec;
        Ok(())
    }

    /// Records that the write `key` is about to be made, and nothing else: what this job
    /// has read or decided so far (cursors, flags) is saved only with its outcome, so a
    /// crash never skips a reply nor loses a decision.
    async fn intend(&mut self, key: &str) -> Result<(), ForgeError> {
        self.save_only(|m| m.pending.push(key.to_owned()))
            .await
            .map_err(|e| ForgeError::Unavailable(format!("store: {}", e.message)))?;
        self.open.push(key.to_owned());
        Ok(())
    }

    /// Makes `change` to the stored record alone (and to the working copy), leaving the
    /// rest of the working copy unsaved.
    async fn save_only(&mut self, change: impl Fn(&mut Mirror)) -> Result<(), JobError> {
        change(&mut self.m);
        let mut stored: Mirror =
            serde_json::from_value(self.stored.data.clone()).unwrap_or_default();
        change(&mut stored);
        let mut rec = self.stored.clone();
        rec.data = serde_json::to_value(&stored).map_err(|e| JobError::fatal(e.to_string()))?;
        rec.updated_at = mainloop_engine::now();
        self.rt
            .inner
            .engine
            .put_task_forge(&rec)
            .await
            .map_err(retry)?;
        self.stored = rec;
        Ok(())
    }

    /// The write `key` is done (made now, or found made by an earlier attempt).
    fn done(&mut self, key: &str) {
        self.open.retain(|k| k != key);
        self.recovering.retain(|k| k != key);
    }

    /// Whether a previous attempt began the write `key` and died before recording it.
    fn was_begun(&self, key: &str) -> bool {
        self.recovering.iter().any(|k| k == key)
    }

    /// Posts a comment once: `key` names it among all of mainloop's writes for the task,
    /// and one that a crashed attempt posted is found and returned instead.
    async fn comment(&mut self, number: u64, key: &str, body: &str) -> Result<u64, ForgeError> {
        let tag = key_tag(key);
        if self.was_begun(key) {
            let (all, _) = self
                .f()
                .comments_since(&self.repo, number, &Cursor::default())
                .await?;
            if let Some(posted) = all.iter().find(|c| c.body.contains(&tag)) {
                self.done(key);
                return Ok(posted.id);
            }
        }
        self.intend(key).await?;
        let c = self
            .f()
            .comment(&self.repo, number, &format!("{body}\n\n{MARKER}\n{tag}"))
            .await?;
        self.done(key);
        Ok(c.id)
    }

    /// Whether `login`'s replies may steer the worker: the token's own account (usually
    /// the person running mainloop) or a configured trusted login.
    async fn trusted(&self, login: &str) -> Result<bool, ForgeError> {
        if self
            .fs
            .trusted_users
            .iter()
            .any(|u| u.eq_ignore_ascii_case(login))
        {
            return Ok(true);
        }
        let me = self
            .rt
            .inner
            .forge_login
            .get_or_try_init(|| self.f().current_user())
            .await?;
        Ok(me.eq_ignore_ascii_case(login))
    }

    /// Keeps what trusted people wrote; the rest is logged and dropped.
    async fn only_trusted<T>(
        &self,
        items: Vec<T>,
        author: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, ForgeError> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if self.trusted(author(&item)).await? {
                out.push(item);
            } else {
                tracing::info!(
                    task = %self.task.id,
                    author = author(&item),
                    "ignoring a reply from an untrusted account"
                );
            }
        }
        Ok(out)
    }

    fn issue(&self) -> Option<u64> {
        self.rec.issue_number.and_then(|n| u64::try_from(n).ok())
    }

    /// Where progress is narrated: the pull request once there is one, else the issue.
    fn thread(&self) -> Option<u64> {
        self.m
            .pr
            .as_ref()
            .map(|p| p.number)
            .or_else(|| self.issue())
    }
}

#[derive(Deserialize)]
struct SyncPayload {
    task_id: TaskId,
}

/// Loads what a forge job works on; `None` when the task is gone or not on a forge.
async fn context<'a>(rt: &'a Runtime, id: TaskId) -> Result<Option<Ctx<'a>>, JobError> {
    let Some(fs) = rt.inner.config.forge.as_ref() else {
        return Ok(None);
    };
    let Some((user, task)) = load(rt, id).await? else {
        return Ok(None);
    };
    let Some(rec) = rt
        .inner
        .engine
        .store()
        .task_forge(id)
        .await
        .map_err(retry)?
    else {
        return Ok(None);
    };
    let Ok(repo) = RepoRef::parse(&rec.repo, &fs.web_host) else {
        return Err(JobError::fatal(format!(
            "'{}' is not a forge repository",
            rec.repo
        )));
    };
    let m: Mirror = serde_json::from_value(rec.data.clone()).unwrap_or_default();
    Ok(Some(Ctx {
        rt,
        fs,
        user,
        task,
        repo,
        stored: rec.clone(),
        rec,
        recovering: m.pending.clone(),
        open: Vec::new(),
        m,
    }))
}

/// Whether a task's work lives on the forge.
pub(crate) async fn is_forge_task(rt: &Runtime, id: TaskId) -> bool {
    rt.inner.config.forge.is_some()
        && matches!(rt.inner.engine.store().task_forge(id).await, Ok(Some(_)))
}

/// The clone URL for a forge task (the task's repository otherwise).
pub(crate) async fn repo_source(rt: &Runtime, task: &Task) -> String {
    if let Some(fs) = rt.inner.config.forge.as_ref()
        && let Ok(Some(rec)) = rt.inner.engine.store().task_forge(task.id).await
        && let Ok(repo) = RepoRef::parse(&rec.repo, &fs.web_host)
    {
        return fs.git_url_for(&repo);
    }
    task.repo.clone()
}

/// Starts a new watch chain now (superseding any other), e.g. on entering a waiting
/// state or when a webhook says something changed.
async fn schedule_watch(c: &mut Ctx<'_>, after: Duration) -> Result<(), JobError> {
    c.m.watch_gen += 1;
    c.save().await?;
    enqueue_watch(c.rt, c.task.id, c.m.watch_gen, 0, after).await
}

async fn enqueue_watch(
    rt: &Runtime,
    id: TaskId,
    generation: u64,
    seq: u64,
    after: Duration,
) -> Result<(), JobError> {
    let at = mainloop_engine::now();
    let run_after = Timestamp::from_millis(
        at.as_millis() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2),
    );
    rt.inner
        .engine
        .enqueue_job(&NewJob {
            key: format!("{WATCH_JOB}:{id}:{generation}:{seq}"),
            kind: WATCH_JOB.to_owned(),
            user_id: None,
            lane: None,
            payload: json!({"task_id": id, "generation": generation, "seq": seq}),
            run_after,
        })
        .await
        .map_err(retry)
}

/// Wakes a task's watch at once (a webhook delivery about its issue or pull request).
///
/// # Errors
/// When the store is unavailable.
pub async fn wake(rt: &Runtime, id: TaskId) -> Result<(), JobError> {
    let lock = rt.forge_lock(id);
    let _guard = lock.lock().await;
    let Some(mut c) = context(rt, id).await? else {
        return Ok(());
    };
    if c.task.core.state.is_final() && c.m.closed {
        return Ok(());
    }
    schedule_watch(&mut c, Duration::ZERO).await
}

/// `forge.sync`: makes the forge reflect the task's current state.
pub(crate) async fn sync(rt: &Runtime, ctx: &JobContext) -> Result<(), JobError> {
    let p: SyncPayload = serde_json::from_value(ctx.job.payload.clone())
        .map_err(|e| JobError::fatal(format!("bad forge job payload: {e}")))?;
    let lock = rt.forge_lock(p.task_id);
    let _guard = lock.lock().await;
    let Some(mut c) = context(rt, p.task_id).await? else {
        return Ok(());
    };
    match sync_in(&mut c).await {
        Ok(()) => {
            clear_outage(&mut c).await?;
            Ok(())
        }
        Err(e) => {
            let (user, task) = (c.user, c.task.id);
            let wait = c.fs.poll_interval;
            note_outage(&mut c, &e).await?;
            drop(_guard);
            give_up_or_retry(rt, ctx, user, task, &e, wait).await
        }
    }
}

/// A forge call failed: a transient failure (an outage, a rate limit) runs the same job
/// again later, however long it lasts, so a GitHub outage only delays the work; anything
/// else (bad credentials, a rejected request) fails the task with GitHub's reason, where
/// the human sees it.
async fn give_up_or_retry(
    rt: &Runtime,
    ctx: &JobContext,
    user: UserId,
    task: TaskId,
    e: &ForgeError,
    interval: Duration,
) -> Result<(), JobError> {
    if e.is_transient() {
        let wait = match e {
            ForgeError::RateLimited(d) => (*d).max(interval),
            _ => interval,
        };
        tracing::warn!(task = %task, error = %e, "GitHub call failed; trying again later");
        return retry_later(rt, ctx, wait).await;
    }
    status(rt, user, task, &format!("GitHub refused: {e}")).await;
    fail(rt, task, format!("GitHub refused: {e}")).await
}

/// Enqueues this job again (same kind, lane and payload, a new key) to run after `wait`.
async fn retry_later(rt: &Runtime, ctx: &JobContext, wait: Duration) -> Result<(), JobError> {
    let now = mainloop_engine::now();
    let after = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
    let job = &ctx.job;
    let base = job.key.split(":retry@").next().unwrap_or(&job.key);
    rt.inner
        .engine
        .enqueue_job(&NewJob {
            key: format!("{base}:retry@{}", now.as_millis()),
            kind: job.kind.clone(),
            user_id: job.user_id,
            lane: job.lane.clone(),
            payload: job.payload.clone(),
            run_after: Timestamp::from_millis(now.as_millis() + after),
        })
        .await
        .map_err(retry)
}

/// Records (once) that the forge is failing, in the task's transcript.
async fn note_outage(c: &mut Ctx<'_>, e: &ForgeError) -> Result<(), JobError> {
    if c.m.outage.is_none() {
        let what = e.to_string();
        // Only the flag: what the failed step read (a cursor past a reply it could not
        // act on) must not be saved, or that reply would be skipped.
        c.save_only(|m| m.outage = Some(what.clone())).await?;
        status(
            c.rt,
            c.user,
            c.task.id,
            &format!("GitHub trouble, retrying: {e}"),
        )
        .await;
    }
    Ok(())
}

/// Records that the forge answers again, if it had been failing.
async fn clear_outage(c: &mut Ctx<'_>) -> Result<(), JobError> {
    if let Some(what) = c.m.outage.clone() {
        c.save_only(|m| m.outage = None).await?;
        status(
            c.rt,
            c.user,
            c.task.id,
            &format!("GitHub is reachable again (after: {what})"),
        )
        .await;
    }
    Ok(())
}

async fn sync_in(c: &mut Ctx<'_>) -> Result<(), ForgeError> {
    if c.rec.issue_number.is_none() && c.task.state != TaskState::Cancelled {
        let tag = key_tag(&format!("issue:{}", c.task.id));
        let found = if c.was_begun("issue") {
            c.f().find_issue(&c.repo, &c.fs.label, &tag).await?
        } else {
            None
        };
        let issue = match found {
            Some(issue) => issue,
            None => {
                c.intend("issue").await?;
                let title = mainloop_domain::inbox::first_line(&c.task.description, 120);
                let body = format!(
                    "{}\n\n---\nA mainloop worker is on this. Its questions and plan will \
                     appear here; answer and decide here or in mainloop.\n\n{MARKER}\n{tag}",
                    c.task.description.trim()
                );
                c.f()
                    .create_issue(&c.repo, &title, &body, &[c.fs.label.as_str()])
                    .await?
            }
        };
        c.done("issue");
        c.rec.issue_number = i64::try_from(issue.number).ok();
        c.m.issue_url = Some(issue.url.clone());
        save(c).await?;
        steps::status(
            c.rt,
            c.user,
            c.task.id,
            &format!("plan issue: {}", issue.url),
        )
        .await;
    }
    let Some(issue) = c.issue() else {
        return Ok(());
    };
    settle_posts(c).await?;
    match c.task.state {
        TaskState::WaitingAnswers => {
            let sig = question_signature(&c.task);
            let key = format!("questions:{}", digest(&sig));
            // Records from before keys were kept hold the signature itself.
            let posted = c.m.questions_posted.as_deref();
            if posted != Some(key.as_str()) && posted != Some(sig.as_str()) {
                c.comment(issue, &key, &questions_comment(&c.task.questions))
                    .await?;
                c.m.questions_posted = Some(key);
                c.m.answered_on_forge = false;
                save(c).await?;
            }
            watch_now(c).await?;
        }
        TaskState::WaitingPlanReview => {
            let plan = c.task.plan.clone().unwrap_or_default();
            let sig = format!("{}:{}", c.task.version, plan.len());
            let key = format!("plan:{}", digest(&sig));
            let posted = c.m.plan_posted.as_deref();
            if posted != Some(key.as_str()) && posted != Some(sig.as_str()) {
                let id = c.comment(issue, &key, &plan_comment(&plan)).await?;
                c.m.plan_comment = Some(id);
                c.m.plan_posted = Some(key);
                c.m.plan_decided_on_forge = false;
                c.m.plan_acknowledged = false;
                save(c).await?;
            }
            watch_now(c).await?;
        }
        // The mirror may reach a task past the state a decision moved it to (a crash
        // delayed it): the decision is still told.
        TaskState::Planning | TaskState::Implementing | TaskState::Checking => {
            acknowledge_app_decisions(c, issue).await?;
        }
        TaskState::Review => {
            acknowledge_app_decisions(c, issue).await?;
            if let Some(pr) = c.m.pr.clone() {
                if !c.m.ready_marked {
                    if pr.draft {
                        c.f().mark_ready_for_review(&c.repo, &pr).await?;
                    }
                    let ci = if c.m.no_ci {
                        "This repository has **no CI**: nothing checked this work."
                    } else {
                        "CI is green."
                    };
                    let summary = c.task.diffstat.clone().unwrap_or_default();
                    c.comment(
                        pr.number,
                        &format!("ready:{}", pr.number),
                        &format!("**Ready for review.** {ci}\n\n```\n{summary}\n```\n\nRequest changes in a review, or mention @{} / start a comment with `/revise`, and the worker picks it up.", c.fs.mention),
                    )
                    .await?;
                    c.m.ready_marked = true;
                    if let Some(p) = c.m.pr.as_mut() {
                        p.draft = false;
                    }
                    save(c).await?;
                }
                watch_now(c).await?;
            }
        }
        TaskState::Cancelled => close_everything(c, issue, "Cancelled in mainloop.").await?,
        TaskState::Merged => {
            if !c.m.closed {
                // A merged "Closes #n" pull request closes the issue on GitHub; closing
                // again is harmless and covers forges that do not. Closed first, then
                // recorded: a crash in between only closes it twice.
                c.f().close_issue(&c.repo, issue).await?;
                c.m.closed = true;
                save(c).await?;
            }
        }
        TaskState::Failed => {
            let reason = c.task.error.clone().unwrap_or_default();
            let key = format!("{}:{reason}", c.task.version);
            if c.m.failure_posted.as_deref() != Some(key.as_str())
                && let Some(thread) = c.thread()
            {
                c.comment(
                    thread,
                    &format!("failure:{}", digest(&key)),
                    &format!("**The worker failed:** {reason}\n\nRetry it in mainloop."),
                )
                .await?;
                c.m.failure_posted = Some(key);
                save(c).await?;
            }
        }
        TaskState::Queued => {}
    }
    Ok(())
}

/// Questions and plans an attempt posted and died before recording, found on the issue
/// and recorded as posted before anything relies on them (acknowledging an app decision,
/// a 👍 on the plan, answers read back) — also when the task has moved past them, so
/// their own step will not run again. One not found was not posted, and is left to its
/// step.
async fn settle_posts(c: &mut Ctx<'_>) -> Result<(), ForgeError> {
    let keys: Vec<String> = c
        .recovering
        .iter()
        .filter(|k| k.starts_with("questions:") || k.starts_with("plan:"))
        .cloned()
        .collect();
    let Some(issue) = c.issue() else {
        return Ok(());
    };
    if keys.is_empty() {
        return Ok(());
    }
    let (all, _) = c
        .f()
        .comments_since(&c.repo, issue, &Cursor::default())
        .await?;
    for key in keys {
        let tag = key_tag(&key);
        if let Some(found) = all.iter().find(|x| x.body.contains(&tag)) {
            if key.starts_with("plan:") {
                c.m.plan_comment = Some(found.id);
                c.m.plan_posted = Some(key.clone());
                c.m.plan_decided_on_forge = false;
                c.m.plan_acknowledged = false;
            } else {
                c.m.questions_posted = Some(key.clone());
                c.m.answered_on_forge = false;
            }
        }
        c.done(&key);
    }
    save(c).await
}

async fn save(c: &mut Ctx<'_>) -> Result<(), ForgeError> {
    c.save()
        .await
        .map_err(|e| ForgeError::Unavailable(format!("store: {}", e.message)))
}

async fn watch_now(c: &mut Ctx<'_>) -> Result<(), ForgeError> {
    schedule_watch(c, Duration::ZERO)
        .await
        .map_err(|e| ForgeError::Unavailable(format!("store: {}", e.message)))
}

/// One round of questions: the transition that asked them (an agent may ask the same
/// questions again, after a restart lost its answers, and that round needs posting too)
/// and the questions themselves.
fn question_signature(task: &Task) -> String {
    let questions = task
        .questions
        .iter()
        .map(|q| format!("{}={}", q.id, q.question))
        .collect::<Vec<_>>()
        .join("|");
    format!("{}:{questions}", task.version)
}

/// Decisions made in the app are told on the issue, so nobody answers twice.
async fn acknowledge_app_decisions(c: &mut Ctx<'_>, issue: u64) -> Result<(), ForgeError> {
    if let (Some(posted), Some(answers)) = (c.m.questions_posted.clone(), c.task.answers.clone())
        && c.m.answers_acknowledged.as_deref() != Some(posted.as_str())
    {
        if !c.m.answered_on_forge {
            let mut text = String::from("**Answered in mainloop:**\n");
            for q in &c.task.questions {
                if let Some(a) = answers.get(&q.id) {
                    let a = match a {
                        mainloop_domain::question::Answer::Choices(l) => l.join(", "),
                        mainloop_domain::question::Answer::Text(t) => t.clone(),
                    };
                    text.push_str(&format!("- {} → {a}\n", q.question));
                }
            }
            let key = format!("answered:{}", digest(&posted));
            c.comment(issue, &key, &text).await?;
        }
        c.m.answers_acknowledged = Some(posted);
        save(c).await?;
    }
    let approved = matches!(
        c.task.state,
        TaskState::Implementing | TaskState::Checking | TaskState::Review
    );
    if approved && c.m.plan_comment.is_some() && !c.m.plan_acknowledged {
        if !c.m.plan_decided_on_forge {
            let key = format!("plan-approved:{}", c.m.plan_comment.unwrap_or_default());
            c.comment(
                issue,
                &key,
                "**Plan approved in mainloop**; the worker is implementing it.",
            )
            .await?;
        }
        c.m.plan_acknowledged = true;
        save(c).await?;
    }
    Ok(())
}

async fn close_everything(c: &mut Ctx<'_>, issue: u64, why: &str) -> Result<(), ForgeError> {
    if c.m.closed {
        return Ok(());
    }
    if let Some(pr) = c.m.pr.clone()
        && pr.state == PrState::Open
    {
        c.comment(pr.number, &format!("closed:{}", pr.number), why)
            .await?;
        c.f().close_pull_request(&c.repo, pr.number).await?;
    }
    c.comment(issue, &format!("closed:{issue}"), why).await?;
    c.f().close_issue(&c.repo, issue).await?;
    c.m.closed = true;
    save(c).await
}

/// `task.commit` on a forge: push the branch, open the draft pull request once, and
/// narrate.
pub(crate) async fn publish(
    rt: &Runtime,
    ctx: &JobContext,
    task: &Task,
    wt: &mainloop_git::Worktree,
) -> Result<(), JobError> {
    let lock = rt.forge_lock(task.id);
    let _guard = lock.lock().await;
    let Some(mut c) = context(rt, task.id).await? else {
        return Ok(());
    };
    let url = c.fs.git_url_for(&c.repo);
    let sha = match rt.inner.git.push_branch(wt, &url).await {
        Ok(sha) => sha,
        Err(e) => {
            // The network or the remote: try again later, saying so in the transcript.
            let wait = c.fs.poll_interval;
            note_outage(
                &mut c,
                &ForgeError::Unavailable(format!("push failed: {e}")),
            )
            .await?;
            drop(_guard);
            return retry_later(rt, ctx, wait).await;
        }
    };
    c.m.pushed_sha = Some(sha.clone());
    c.save().await?;
    let result: Result<(), ForgeError> = async {
        if c.m.pr.is_none() {
            let pr = open_pull_request(&mut c, wt).await?;
            c.rec.pr_number = i64::try_from(pr.number).ok();
            c.m.draft_unannounced = true;
            c.m.narrated_sha = Some(sha.clone());
            steps::status(
                c.rt,
                c.user,
                c.task.id,
                &format!("draft pull request: {}", pr.url),
            )
            .await;
            c.m.pr = Some(pr);
            save(&mut c).await?;
        }
        let Some(pr) = c.m.pr.clone() else {
            return Ok(());
        };
        if c.m.draft_unannounced {
            if let Some(issue) = c.issue() {
                c.comment(
                    issue,
                    &format!("draft:{}", pr.number),
                    &format!("Draft pull request: {}", pr.url),
                )
                .await?;
            }
            c.m.draft_unannounced = false;
            save(&mut c).await?;
        } else if c.m.narrated_sha.as_deref() != Some(sha.as_str()) {
            c.comment(
                pr.number,
                &format!("pushed:{sha}"),
                &format!("Pushed an update: `{}`.", &sha[..sha.len().min(12)]),
            )
            .await?;
            c.m.narrated_sha = Some(sha.clone());
            save(&mut c).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => clear_outage(&mut c).await?,
        Err(e) => {
            let (user, id, wait) = (c.user, c.task.id, c.fs.poll_interval);
            note_outage(&mut c, &e).await?;
            drop(_guard);
            give_up_or_retry(rt, ctx, user, id, &e, wait).await?;
        }
    }
    Ok(())
}

/// Opens the task's draft pull request, or finds the one an earlier attempt opened
/// without recording it (opening a second one for the branch is refused).
async fn open_pull_request(
    c: &mut Ctx<'_>,
    wt: &mainloop_git::Worktree,
) -> Result<PullRequest, ForgeError> {
    if c.was_begun("pr")
        && let Some(pr) = existing_pull_request(c, &wt.branch).await?
    {
        c.done("pr");
        return Ok(pr);
    }
    c.intend("pr").await?;
    let title = mainloop_domain::inbox::first_line(&c.task.description, 120);
    let closes = c
        .issue()
        .map(|n| format!("Closes #{n}.\n\n"))
        .unwrap_or_default();
    let body = format!(
        "{closes}{}\n\nmainloop keeps this draft until CI is green, then marks it ready for review.\n\n{MARKER}",
        c.task
            .plan
            .as_deref()
            .unwrap_or(c.task.description.as_str())
            .trim()
    );
    let opened = c
        .f()
        .open_pull_request(
            &c.repo,
            NewPullRequest {
                head: &wt.branch,
                base: &wt.base,
                title: &title,
                body: &body,
                draft: true,
            },
        )
        .await;
    let pr = match opened {
        Ok(pr) => pr,
        Err(ForgeError::Rejected(why)) => existing_pull_request(c, &wt.branch)
            .await?
            .ok_or(ForgeError::Rejected(why))?,
        Err(e) => return Err(e),
    };
    c.done("pr");
    Ok(pr)
}

/// The open pull request from `branch`, if there is one.
async fn existing_pull_request(
    c: &Ctx<'_>,
    branch: &str,
) -> Result<Option<PullRequest>, ForgeError> {
    let open = c.f().open_pull_requests(&c.repo, 100).await?;
    match open.iter().find(|p| p.head == branch) {
        Some(p) => Ok(Some(c.f().pull_request(&c.repo, p.number).await?)),
        None => Ok(None),
    }
}

/// `task.checks` on a forge: start watching CI for the pushed commit.
pub(crate) async fn start_ci(rt: &Runtime, task: &Task) -> Result<(), JobError> {
    let lock = rt.forge_lock(task.id);
    let _guard = lock.lock().await;
    let Some(mut c) = context(rt, task.id).await? else {
        return Ok(());
    };
    let Some(sha) = c.m.pushed_sha.clone() else {
        drop(_guard);
        fail(rt, task.id, "nothing was pushed to check".into()).await?;
        return Ok(());
    };
    if c.m.ci_sha.as_deref() != Some(sha.as_str()) {
        c.m.ci_sha = Some(sha.clone());
        c.m.ci_since = Some(mainloop_engine::now().as_millis());
        c.m.no_ci = false;
    }
    status(
        rt,
        c.user,
        task.id,
        &format!("watching CI for {}", &sha[..sha.len().min(12)]),
    )
    .await;
    schedule_watch(&mut c, Duration::ZERO).await?;
    Ok(())
}

/// `task.merge` on a forge: merge the pull request.
pub(crate) async fn merge(rt: &Runtime, ctx: &JobContext, task: &Task) -> Result<(), JobError> {
    let lock = rt.forge_lock(task.id);
    let _guard = lock.lock().await;
    let Some(c) = context(rt, task.id).await? else {
        return Ok(());
    };
    let Some(pr) = c.m.pr.clone() else {
        drop(_guard);
        fail(rt, task.id, "there is no pull request to merge".into()).await?;
        return Ok(());
    };
    let mut merged = c.f().merge_pull_request(&c.repo, pr.number).await;
    if matches!(merged, Err(ForgeError::Rejected(_))) {
        // Merged already: by an attempt that died before recording it, or on GitHub.
        match c.f().pull_request(&c.repo, pr.number).await {
            Ok(now) if now.state == PrState::Merged => merged = Ok(()),
            Ok(_) => {}
            Err(e) => merged = Err(e),
        }
    }
    match merged {
        Ok(()) => {
            drop(_guard);
            apply(rt, task.id, TaskEvent::Merged).await?;
        }
        Err(ForgeError::Rejected(why)) => {
            drop(_guard);
            fail(rt, task.id, format!("GitHub refused the merge: {why}")).await?;
        }
        Err(e) => {
            let (user, id, wait) = (c.user, c.task.id, c.fs.poll_interval);
            drop(_guard);
            give_up_or_retry(rt, ctx, user, id, &e, wait).await?;
        }
    }
    Ok(())
}

/// `forge.watch`: polls what the task waits on, then reschedules itself.
pub(crate) async fn watch(rt: &Runtime, ctx: &JobContext) -> Result<(), JobError> {
    let p: WatchPayload = serde_json::from_value(ctx.job.payload.clone())
        .map_err(|e| JobError::fatal(format!("bad forge watch payload: {e}")))?;
    match watch_once(rt, &p).await {
        Ok(()) => Ok(()),
        // A store hiccup or a transition that lost a race: the chain goes on later rather
        // than spending the dispatcher's few retries and ending the watch.
        Err(e) => {
            tracing::warn!(task = %p.task_id, error = %e, "forge watch step failed; continuing later");
            let interval = rt
                .inner
                .config
                .forge
                .as_ref()
                .map_or(Duration::from_secs(60), |f| f.poll_interval);
            enqueue_watch(rt, p.task_id, p.generation, p.seq + 1, interval).await
        }
    }
}

#[derive(Deserialize)]
struct WatchPayload {
    task_id: TaskId,
    generation: u64,
    #[serde(default)]
    seq: u64,
}

async fn watch_once(rt: &Runtime, p: &WatchPayload) -> Result<(), JobError> {
    let lock = rt.forge_lock(p.task_id);
    let guard = lock.lock().await;
    let Some(mut c) = context(rt, p.task_id).await? else {
        return Ok(());
    };
    if c.m.watch_gen != p.generation {
        return Ok(()); // superseded by a newer chain
    }
    if c.task.state.is_final() {
        return Ok(());
    }
    let interval = c.fs.poll_interval;
    let outcome = match settle_posts(&mut c).await {
        Ok(()) => poll(&mut c).await,
        Err(e) => Err(e),
    };
    if let Ok(Poll::Applied(event)) = outcome {
        // What was read (the cursor past the reply) commits with the transition it
        // caused, so a crash neither loses the reply nor acts on it twice. The
        // transition's own forge.sync continues from here.
        let rec = c.record()?;
        match rt
            .inner
            .engine
            .apply_task_event_with_forge(p.task_id, event, &rec)
            .await
        {
            Ok(_) => c.stored = rec,
            Err(EngineError::WrongState(e)) => {
                tracing::info!(task = %p.task_id, error = %e, "task moved on; forge reply dropped");
                c.save().await?;
            }
            Err(e @ (EngineError::Unavailable(_) | EngineError::Conflict(_))) => {
                return Err(retry(e));
            }
            Err(e) => return Err(JobError::fatal(e.to_string())),
        }
        clear_outage(&mut c).await?;
        return Ok(());
    }
    if outcome.is_ok() {
        clear_outage(&mut c).await?;
    }
    let next = match outcome {
        Ok(Poll::Continue) => Some(interval),
        Ok(Poll::Stop) => None,
        Ok(Poll::Applied(_)) => None,
        Err(e) => {
            // An outage or a rate limit delays the work; it never ends the watch.
            let wait = match &e {
                ForgeError::RateLimited(d) => (*d).max(interval),
                _ => interval,
            };
            note_outage(&mut c, &e).await?;
            tracing::warn!(task = %p.task_id, error = %e, "forge poll failed; retrying");
            Some(wait)
        }
    };
    drop(guard);
    if let Some(after) = next {
        enqueue_watch(rt, p.task_id, p.generation, p.seq + 1, after).await?;
    }
    Ok(())
}

enum Poll {
    Continue,
    Stop,
    Applied(TaskEvent),
}

/// Human comments on the issue since the cursor (mainloop's own are skipped).
async fn new_issue_comments(c: &mut Ctx<'_>) -> Result<Vec<mainloop_forge::Comment>, ForgeError> {
    let Some(issue) = c.issue() else {
        return Ok(Vec::new());
    };
    let (comments, cursor) = c
        .f()
        .comments_since(&c.repo, issue, &c.m.issue_cursor)
        .await?;
    let theirs: Vec<_> = comments
        .into_iter()
        .filter(|x| !x.body.contains(MARKER))
        .collect();
    let trusted = c.only_trusted(theirs, |x| x.author.as_str()).await?;
    c.m.issue_cursor = cursor;
    Ok(trusted)
}

async fn poll(c: &mut Ctx<'_>) -> Result<Poll, ForgeError> {
    match c.task.state {
        TaskState::WaitingAnswers => poll_answers(c).await,
        TaskState::WaitingPlanReview => poll_plan(c).await,
        TaskState::Checking => poll_ci(c).await,
        TaskState::Review => poll_review(c).await,
        TaskState::Queued | TaskState::Planning | TaskState::Implementing | TaskState::Failed => {
            late_replies(c).await?;
            Ok(if c.task.state == TaskState::Failed {
                Poll::Stop
            } else {
                Poll::Continue
            })
        }
        TaskState::Merged | TaskState::Cancelled => Ok(Poll::Stop),
    }
}

/// Answers or decisions posted on the issue after the app already decided: say so.
async fn late_replies(c: &mut Ctx<'_>) -> Result<(), ForgeError> {
    let Some(issue) = c.issue() else {
        return Ok(());
    };
    for comment in new_issue_comments(c).await? {
        if answers_something(c, &comment.body) || parse_plan_reply(&comment.body).is_some() {
            too_late(c, issue, &comment, "this was already answered or decided").await?;
        }
    }
    save(c).await
}

/// Whether a comment tries to answer the task's questions.
fn answers_something(c: &Ctx<'_>, body: &str) -> bool {
    !matches!(
        parse_answers(body, &c.task.questions),
        ParsedAnswers::NotAnAnswer
    )
}

/// Tells a reply's author that the app decided first and nothing changed.
async fn too_late(
    c: &mut Ctx<'_>,
    issue: u64,
    reply: &mainloop_forge::Comment,
    what: &str,
) -> Result<(), ForgeError> {
    c.comment(
        issue,
        &format!("late:{}", reply.id),
        &format!("@{} {what} in mainloop; nothing changed.", reply.author),
    )
    .await
    .map(|_| ())
}

async fn poll_answers(c: &mut Ctx<'_>) -> Result<Poll, ForgeError> {
    let Some(issue) = c.issue() else {
        return Ok(Poll::Stop);
    };
    for comment in new_issue_comments(c).await? {
        match parse_answers(&comment.body, &c.task.questions) {
            ParsedAnswers::NotAnAnswer => {}
            ParsedAnswers::Invalid(why) => {
                let key = format!("invalid:{}", comment.id);
                c.comment(issue, &key, &format!("@{} {why}", comment.author))
                    .await?;
            }
            ParsedAnswers::Complete(answers) => {
                c.m.answered_on_forge = true;
                c.m.answers_acknowledged = c.m.questions_posted.clone();
                c.comment(
                    issue,
                    &format!("thanks:{}", comment.id),
                    &format!(
                        "Thanks @{}; the worker continues with your answers.",
                        comment.author
                    ),
                )
                .await?;
                return Ok(Poll::Applied(TaskEvent::Answered(answers)));
            }
        }
    }
    save(c).await?;
    Ok(Poll::Continue)
}

async fn poll_plan(c: &mut Ctx<'_>) -> Result<Poll, ForgeError> {
    let Some(issue) = c.issue() else {
        return Ok(Poll::Stop);
    };
    for comment in new_issue_comments(c).await? {
        let decision = match parse_plan_reply(&comment.body) {
            None => {
                // Answers to questions that were already answered (in the app, say).
                if c.task.answers.is_some() && answers_something(c, &comment.body) {
                    too_late(c, issue, &comment, "the questions were already answered").await?;
                }
                continue;
            }
            Some(PlanReply::Invalid(why)) => {
                let key = format!("invalid:{}", comment.id);
                c.comment(issue, &key, &format!("@{} {why}", comment.author))
                    .await?;
                continue;
            }
            Some(PlanReply::Approve) => PlanAction::Approve,
            Some(PlanReply::Revise(f)) => PlanAction::Revise(Some(f)),
            Some(PlanReply::Cancel) => PlanAction::Cancel,
        };
        c.m.plan_decided_on_forge = true;
        c.m.plan_acknowledged = true;
        let reply = match &decision {
            PlanAction::Approve => "approved; the worker is implementing it",
            PlanAction::Revise(_) => "sent back for revision",
            PlanAction::Cancel => "cancelled",
        };
        c.comment(
            issue,
            &format!("decided:{}", comment.id),
            &format!("Plan {reply} (@{}).", comment.author),
        )
        .await?;
        return Ok(Poll::Applied(plan_event(decision)));
    }
    if let Some(plan_comment) = c.m.plan_comment {
        let fans = c.f().thumbs_up(&c.repo, plan_comment).await?;
        let fans = c.only_trusted(fans, String::as_str).await?;
        if let Some(who) = fans.first() {
            c.m.plan_decided_on_forge = true;
            c.m.plan_acknowledged = true;
            c.comment(
                issue,
                &format!("thumbs-up:{plan_comment}"),
                &format!("Plan approved by @{who}'s 👍; the worker is implementing it."),
            )
            .await?;
            return Ok(Poll::Applied(TaskEvent::PlanApproved));
        }
    }
    save(c).await?;
    Ok(Poll::Continue)
}

fn plan_event(action: PlanAction) -> TaskEvent {
    match action {
        PlanAction::Approve => TaskEvent::PlanApproved,
        PlanAction::Revise(f) => TaskEvent::PlanRevisionRequested(f.unwrap_or_default()),
        PlanAction::Cancel => TaskEvent::CancelRequested,
    }
}

async fn poll_ci(c: &mut Ctx<'_>) -> Result<Poll, ForgeError> {
    let (Some(sha), Some(since)) = (c.m.ci_sha.clone(), c.m.ci_since) else {
        return Ok(Poll::Stop); // the checks step starts the CI watch
    };
    let elapsed = Duration::from_millis(
        u64::try_from(mainloop_engine::now().as_millis() - since).unwrap_or(0),
    );
    match c.f().ci_status(&c.repo, &sha).await? {
        CiStatus::None if elapsed >= c.fs.ci_appear_timeout => {
            c.m.no_ci = true;
            record_checks(c, json!({"command": "GitHub CI", "passed": null, "no_ci": true, "output": "no check runs on this commit: this repository has no CI"})).await;
            review_summary(c, "no CI: nothing checked this work").await;
            Ok(Poll::Applied(TaskEvent::ChecksPassed))
        }
        CiStatus::None | CiStatus::Pending { .. }
            if elapsed >= c.fs.ci_pending_timeout && c.m.ci_since.is_some() =>
        {
            Ok(Poll::Applied(TaskEvent::AgentFailed(format!(
                "CI did not finish within {} s",
                c.fs.ci_pending_timeout.as_secs()
            ))))
        }
        CiStatus::None | CiStatus::Pending { .. } => Ok(Poll::Continue),
        CiStatus::Passed { total } => {
            record_checks(c, json!({"command": "GitHub CI", "passed": true, "output": format!("{total} check(s) passed")})).await;
            review_summary(c, &format!("green ({total} check(s) passed)")).await;
            Ok(Poll::Applied(TaskEvent::ChecksPassed))
        }
        CiStatus::Failed { total, failures } => {
            let mut report = format!(
                "{} of {total} GitHub check(s) failed on {}:\n",
                failures.len(),
                &sha[..sha.len().min(12)]
            );
            for f in failures.iter().take(5) {
                report.push_str(&format!("\n### {} ({})\n{}\n", f.name, f.conclusion, f.url));
                if let Some(job) = f.job_id {
                    match c.f().job_log_tail(&c.repo, job, c.fs.log_tail_bytes).await {
                        Ok(tail) => report.push_str(&format!("```\n{}\n```\n", tail.trim_end())),
                        Err(e) => report.push_str(&format!("(log unavailable: {e})\n")),
                    }
                }
            }
            if let Some(pr) = c.m.pr.as_ref().map(|p| p.number) {
                let names: Vec<&str> = failures.iter().map(|f| f.name.as_str()).collect();
                let names = names.join(", ");
                c.comment(
                    pr,
                    &format!("ci-failed:{sha}"),
                    &format!("CI failed ({names}); the worker is fixing it."),
                )
                .await?;
            }
            record_checks(
                c,
                json!({"command": "GitHub CI", "passed": false, "output": report}),
            )
            .await;
            c.m.ci_sha = None;
            Ok(Poll::Applied(TaskEvent::ChecksFailed(report)))
        }
    }
}

/// Puts the pull request's link and the CI outcome at the top of the summary the review
/// inbox item shows (best effort: review works without it).
async fn review_summary(c: &Ctx<'_>, ci: &str) {
    let Some(pr) = &c.m.pr else { return };
    let stat = c.task.diffstat.clone().unwrap_or_default();
    let stat: Vec<&str> = stat
        .lines()
        .filter(|l| !l.starts_with("Pull request: ") && !l.starts_with("CI: "))
        .collect();
    let text = format!("Pull request: {}\nCI: {ci}\n{}", pr.url, stat.join("\n"));
    if let Err(e) =
        c.rt.inner
            .engine
            .set_task_diffstat(c.task.id, text.trim_end())
            .await
    {
        tracing::warn!(error = %e, "could not record the review summary");
    }
}

async fn record_checks(c: &Ctx<'_>, payload: serde_json::Value) {
    if let Err(e) =
        c.rt.inner
            .engine
            .record_task_output(c.user, c.task.id, "checks", &payload)
            .await
    {
        tracing::warn!(error = %e, "could not record the CI outcome");
    }
}

async fn poll_review(c: &mut Ctx<'_>) -> Result<Poll, ForgeError> {
    let Some(pr) = c.m.pr.clone() else {
        return Ok(Poll::Stop);
    };
    let now = c.f().pull_request(&c.repo, pr.number).await?;
    match now.state {
        PrState::Merged => return Ok(Poll::Applied(TaskEvent::Merged)),
        PrState::Closed => {
            c.m.closed = true;
            return Ok(Poll::Applied(TaskEvent::ClosedUnmerged));
        }
        PrState::Open => {}
    }
    let (items, cursor) = c
        .f()
        .feedback_since(&c.repo, pr.number, &c.m.feedback_cursor)
        .await?;
    let human: Vec<_> = items
        .into_iter()
        .filter(|f| !f.body.contains(MARKER))
        .collect();
    let human = c.only_trusted(human, |f| f.author.as_str()).await?;
    c.m.feedback_cursor = cursor;
    if let Some(feedback) = review_feedback(&human, &c.fs.mention, "") {
        let key = format!(
            "feedback:{}",
            human.iter().map(|f| f.id).max().unwrap_or_default()
        );
        c.comment(
            pr.number,
            &key,
            "On it: the worker is addressing this feedback.",
        )
        .await?;
        c.m.ci_sha = None;
        return Ok(Poll::Applied(TaskEvent::ChangesRequested(feedback)));
    }
    save(c).await?;
    Ok(Poll::Continue)
}

/// A code host (GitHub) as the task's forge: push and a draft pull request, the forge's
/// CI, and merging the pull request.
pub(crate) struct RemoteForge;

impl crate::steps::WorkForge for RemoteForge {
    async fn publish(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        task: &Task,
        wt: &mainloop_git::Worktree,
    ) -> Result<(), JobError> {
        publish(rt, ctx, task, wt).await
    }

    async fn check(
        &self,
        rt: &Runtime,
        _ctx: &JobContext,
        _user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        crate::steps::record_diffstat(rt, task).await;
        start_ci(rt, task).await
    }

    async fn merge(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        _user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        merge(rt, ctx, task).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! The mirror when the process dies (or a response is lost) between a forge write and
    //! recording it: an in-memory forge that can carry out a write and then fail the call,
    //! as a connection reset after GitHub acted looks, and as a crash looks to the next
    //! attempt (the attempt's bookkeeping is not saved either way).

    use super::*;
    use futures::future::BoxFuture;
    use mainloop_domain::question::{Question, QuestionOption};
    use mainloop_engine::{CreateTask, Engine, EngineConfig};
    use mainloop_forge::{
        Comment, CommitSummary, Feedback, FeedbackCursor, IssueRef, PrSummary,
        Result as ForgeResult,
    };
    use mainloop_store::{Job, JobState, Store, StoreOptions};
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct State {
        next: u64,
        /// (number, title, body)
        issues: Vec<(u64, String, String)>,
        /// (thread number, comment)
        comments: Vec<(u64, Comment)>,
        /// (number, head, merged)
        pulls: Vec<(u64, String, bool)>,
        /// Calls that do their work, then fail as if the answer never arrived.
        lose: Vec<&'static str>,
    }

    #[derive(Debug, Default)]
    struct MemoryForge(Mutex<State>);

    impl MemoryForge {
        fn lose_next(&self, call: &'static str) {
            self.0.lock().unwrap().lose.push(call);
        }

        /// Whether this call's answer is to be lost (once).
        fn lost(&self, call: &str) -> bool {
            let mut s = self.0.lock().unwrap();
            let before = s.lose.len();
            s.lose.retain(|c| *c != call);
            s.lose.len() != before
        }

        fn comments_with(&self, needle: &str) -> usize {
            let s = self.0.lock().unwrap();
            s.comments
                .iter()
                .filter(|(_, c)| c.body.contains(needle))
                .count()
        }

        fn answer(&self, number: u64, body: &str) {
            let mut s = self.0.lock().unwrap();
            s.next += 1;
            let id = s.next;
            s.comments.push((
                number,
                Comment {
                    id,
                    author: "alice".into(),
                    body: body.to_owned(),
                    url: String::new(),
                },
            ));
        }
    }

    fn reset() -> ForgeError {
        ForgeError::Unavailable("connection reset".into())
    }

    fn pr(number: u64, merged: bool) -> PullRequest {
        PullRequest {
            number,
            node_id: format!("PR_{number}"),
            url: format!("https://example.com/pull/{number}"),
            head_sha: "abc".into(),
            draft: true,
            state: if merged {
                PrState::Merged
            } else {
                PrState::Open
            },
        }
    }

    impl Forge for MemoryForge {
        fn current_user(&self) -> BoxFuture<'_, ForgeResult<String>> {
            Box::pin(async { Ok("mainloop-bot".to_owned()) })
        }

        fn create_issue<'a>(
            &'a self,
            _repo: &'a RepoRef,
            title: &'a str,
            body: &'a str,
            _labels: &'a [&'a str],
        ) -> BoxFuture<'a, ForgeResult<IssueRef>> {
            Box::pin(async move {
                let number = {
                    let mut s = self.0.lock().unwrap();
                    s.next += 1;
                    let n = s.next;
                    s.issues.push((n, title.to_owned(), body.to_owned()));
                    n
                };
                if self.lost("create_issue") {
                    return Err(reset());
                }
                Ok(IssueRef {
                    number,
                    url: format!("https://example.com/issues/{number}"),
                })
            })
        }

        fn find_issue<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _label: &'a str,
            marker: &'a str,
        ) -> BoxFuture<'a, ForgeResult<Option<IssueRef>>> {
            Box::pin(async move {
                let s = self.0.lock().unwrap();
                Ok(s.issues
                    .iter()
                    .rev()
                    .find(|(_, _, body)| body.contains(marker))
                    .map(|(n, _, _)| IssueRef {
                        number: *n,
                        url: format!("https://example.com/issues/{n}"),
                    }))
            })
        }

        fn comment<'a>(
            &'a self,
            _repo: &'a RepoRef,
            number: u64,
            body: &'a str,
        ) -> BoxFuture<'a, ForgeResult<Comment>> {
            Box::pin(async move {
                let c = {
                    let mut s = self.0.lock().unwrap();
                    s.next += 1;
                    let c = Comment {
                        id: s.next,
                        author: "mainloop-bot".into(),
                        body: body.to_owned(),
                        url: String::new(),
                    };
                    s.comments.push((number, c.clone()));
                    c
                };
                if self.lost("comment") {
                    return Err(reset());
                }
                Ok(c)
            })
        }

        fn comments_since<'a>(
            &'a self,
            _repo: &'a RepoRef,
            number: u64,
            cursor: &'a Cursor,
        ) -> BoxFuture<'a, ForgeResult<(Vec<Comment>, Cursor)>> {
            Box::pin(async move {
                let s = self.0.lock().unwrap();
                let new: Vec<Comment> = s
                    .comments
                    .iter()
                    .filter(|(n, c)| *n == number && c.id > cursor.seen_id)
                    .map(|(_, c)| c.clone())
                    .collect();
                let seen_id = new.last().map_or(cursor.seen_id, |c| c.id);
                Ok((
                    new,
                    Cursor {
                        seen_id,
                        etag: None,
                    },
                ))
            })
        }

        fn thumbs_up<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _comment_id: u64,
        ) -> BoxFuture<'a, ForgeResult<Vec<String>>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn close_issue<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _number: u64,
        ) -> BoxFuture<'a, ForgeResult<()>> {
            Box::pin(async { Ok(()) })
        }

        fn open_pull_request<'a>(
            &'a self,
            _repo: &'a RepoRef,
            new: NewPullRequest<'a>,
        ) -> BoxFuture<'a, ForgeResult<PullRequest>> {
            Box::pin(async move {
                let number = {
                    let mut s = self.0.lock().unwrap();
                    if s.pulls.iter().any(|(_, head, _)| head == new.head) {
                        return Err(ForgeError::Rejected(format!(
                            "A pull request already exists for {}",
                            new.head
                        )));
                    }
                    s.next += 1;
                    let n = s.next;
                    s.pulls.push((n, new.head.to_owned(), false));
                    n
                };
                if self.lost("open_pull_request") {
                    return Err(reset());
                }
                Ok(pr(number, false))
            })
        }

        fn pull_request<'a>(
            &'a self,
            _repo: &'a RepoRef,
            number: u64,
        ) -> BoxFuture<'a, ForgeResult<PullRequest>> {
            Box::pin(async move {
                let s = self.0.lock().unwrap();
                let (_, _, merged) = s
                    .pulls
                    .iter()
                    .find(|(n, _, _)| *n == number)
                    .ok_or_else(|| ForgeError::NotFound(format!("#{number}")))?;
                Ok(pr(number, *merged))
            })
        }

        fn ci_status<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _sha: &'a str,
        ) -> BoxFuture<'a, ForgeResult<CiStatus>> {
            Box::pin(async { Ok(CiStatus::None) })
        }

        fn job_log_tail<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _job_id: u64,
            _max_bytes: usize,
        ) -> BoxFuture<'a, ForgeResult<String>> {
            Box::pin(async { Ok(String::new()) })
        }

        fn mark_ready_for_review<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _pr: &'a PullRequest,
        ) -> BoxFuture<'a, ForgeResult<()>> {
            Box::pin(async { Ok(()) })
        }

        fn feedback_since<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _number: u64,
            cursor: &'a FeedbackCursor,
        ) -> BoxFuture<'a, ForgeResult<(Vec<Feedback>, FeedbackCursor)>> {
            Box::pin(async move { Ok((Vec::new(), cursor.clone())) })
        }

        fn merge_pull_request<'a>(
            &'a self,
            _repo: &'a RepoRef,
            number: u64,
        ) -> BoxFuture<'a, ForgeResult<()>> {
            Box::pin(async move {
                {
                    let mut s = self.0.lock().unwrap();
                    let pr = s
                        .pulls
                        .iter_mut()
                        .find(|(n, _, _)| *n == number)
                        .ok_or_else(|| ForgeError::NotFound(format!("#{number}")))?;
                    if pr.2 {
                        // GitHub: 405 "Pull Request is not mergeable".
                        return Err(ForgeError::Rejected("not mergeable".into()));
                    }
                    pr.2 = true;
                }
                if self.lost("merge_pull_request") {
                    return Err(reset());
                }
                Ok(())
            })
        }

        fn close_pull_request<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _number: u64,
        ) -> BoxFuture<'a, ForgeResult<()>> {
            Box::pin(async { Ok(()) })
        }

        fn open_pull_requests<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _limit: usize,
        ) -> BoxFuture<'a, ForgeResult<Vec<PrSummary>>> {
            Box::pin(async move {
                let s = self.0.lock().unwrap();
                Ok(s.pulls
                    .iter()
                    .filter(|(_, _, merged)| !merged)
                    .map(|(n, head, _)| PrSummary {
                        number: *n,
                        title: String::new(),
                        url: String::new(),
                        author: "mainloop-bot".into(),
                        draft: true,
                        head: head.clone(),
                    })
                    .collect())
            })
        }

        fn recent_commits<'a>(
            &'a self,
            _repo: &'a RepoRef,
            _branch: &'a str,
            _limit: usize,
        ) -> BoxFuture<'a, ForgeResult<Vec<CommitSummary>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    struct World {
        rt: Runtime,
        forge: Arc<MemoryForge>,
        task: TaskId,
        _dir: tempfile::TempDir,
    }

    async fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite", dir.path().display());
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        let engine = Engine::new(
            store,
            None,
            EngineConfig {
                forge_host: Some("github.com".into()),
                ..EngineConfig::default()
            },
        );
        let (owner, _) = engine.ensure_owner("owner").await.unwrap();
        let forge = Arc::new(MemoryForge::default());
        let settings = ForgeSettings {
            forge: forge.clone(),
            web_host: "github.com".into(),
            git_url: "file:///nowhere/{owner}/{name}.git".into(),
            label: "mainloop".into(),
            mention: "mainloop".into(),
            poll_interval: Duration::from_secs(60),
            ci_pending_timeout: Duration::from_secs(600),
            ci_appear_timeout: Duration::from_secs(600),
            log_tail_bytes: 1024,
            trusted_users: vec!["alice".into()],
        };
        let rt = Runtime::new(
            engine.clone(),
            Arc::new(mainloop_agent::ClaudeCode::new(vec!["false".into()])),
            mainloop_git::Git::new(dir.path().join("repos"), dir.path().join("worktrees")),
            crate::WorkerConfig {
                max_agents: 1,
                idle_timeout: Duration::from_secs(60),
                inactivity_timeout: Duration::from_secs(60),
                api_retries: 0,
                api_retry_delay: Duration::from_secs(1),
                check_timeout: Duration::from_secs(60),
                check_output_bytes: 1024,
                model: None,
                agent_env: Vec::new(),
                plans_dir: dir.path().join("plans"),
                pid_dir: dir.path().join("agents"),
                forge: Some(settings),
                sandbox: None,
            },
        );
        let task = engine
            .create_task(
                owner.id,
                &CreateTask {
                    description: "write a note".into(),
                    repo: "octo/app".into(),
                    skip_plan: false,
                    model: None,
                },
            )
            .await
            .unwrap();
        World {
            rt,
            forge,
            task: task.id,
            _dir: dir,
        }
    }

    fn questions() -> Vec<Question> {
        vec![Question {
            id: "q1".into(),
            header: "Tone".into(),
            question: "Which tone?".into(),
            options: vec![QuestionOption {
                label: "Plain".into(),
                description: "just the facts".into(),
            }],
            multi_select: false,
        }]
    }

    impl World {
        fn job(&self, kind: &str, payload: serde_json::Value) -> JobContext {
            let at = mainloop_engine::now();
            JobContext {
                engine: self.rt.inner.engine.clone(),
                job: Job {
                    id: 1,
                    key: format!("{kind}:test"),
                    kind: kind.into(),
                    user_id: None,
                    lane: None,
                    payload,
                    state: JobState::Running,
                    attempts: 1,
                    run_after: at,
                    lease_owner: None,
                    lease_until: None,
                    last_error: None,
                    created_at: at,
                },
                owner: "test".into(),
            }
        }

        async fn apply(&self, event: TaskEvent) {
            self.rt
                .inner
                .engine
                .apply_task_event(None, self.task, event)
                .await
                .unwrap();
        }

        async fn sync(&self) {
            let ctx = self.job(SYNC_JOB, json!({"task_id": self.task}));
            sync(&self.rt, &ctx).await.unwrap();
        }

        async fn watch(&self) {
            let generation = self.mirror().await.watch_gen;
            let ctx = self.job(
                WATCH_JOB,
                json!({"task_id": self.task, "generation": generation}),
            );
            watch(&self.rt, &ctx).await.unwrap();
        }

        async fn mirror(&self) -> Mirror {
            let rec = self
                .rt
                .inner
                .engine
                .store()
                .task_forge(self.task)
                .await
                .unwrap()
                .unwrap();
            serde_json::from_value(rec.data).unwrap()
        }

        async fn state(&self) -> TaskState {
            load(&self.rt, self.task).await.unwrap().unwrap().1.state
        }

        /// Into waiting for answers, with the issue and the questions posted.
        async fn asked(&self) {
            self.apply(TaskEvent::SlotGranted).await;
            self.apply(TaskEvent::QuestionsAsked(questions())).await;
            self.sync().await;
        }
    }

    /// The human's answer to [`questions`].
    fn answered() -> TaskEvent {
        TaskEvent::Answered(
            [(
                "q1".to_owned(),
                mainloop_domain::question::Answer::Choices(vec!["Plain".into()]),
            )]
            .into_iter()
            .collect(),
        )
    }

    #[tokio::test]
    async fn an_issue_whose_creation_went_unrecorded_is_found_not_made_again() {
        let w = world().await;
        w.forge.lose_next("create_issue");
        w.sync().await; // GitHub made it; the answer was lost
        w.sync().await;
        let issues = w.forge.0.lock().unwrap().issues.len();
        assert_eq!(issues, 1);
        let rec = w.rt.inner.engine.store().task_forge(w.task).await.unwrap();
        assert_eq!(rec.unwrap().issue_number, Some(1));
    }

    #[tokio::test]
    async fn a_comment_whose_posting_went_unrecorded_is_not_posted_again() {
        let w = world().await;
        w.apply(TaskEvent::SlotGranted).await;
        w.apply(TaskEvent::QuestionsAsked(questions())).await;
        w.forge.lose_next("comment");
        w.sync().await;
        w.sync().await;
        assert_eq!(w.forge.comments_with("The worker has questions"), 1);
        assert!(w.mirror().await.pending.is_empty());
    }

    #[tokio::test]
    async fn an_answer_read_by_a_failed_poll_is_read_again() {
        let w = world().await;
        w.asked().await;
        w.forge.answer(1, "1: 1");
        // Reading the answer works; the thanks is posted but its answer lost.
        w.forge.lose_next("comment");
        w.watch().await;
        assert_eq!(w.state().await, TaskState::WaitingAnswers);
        // Whether or not the thanks landed, the next poll still sees the answer.
        w.watch().await;
        assert_eq!(w.state().await, TaskState::Planning);
        assert_eq!(w.forge.comments_with("Thanks @alice"), 1);
    }

    #[tokio::test]
    async fn a_second_round_of_the_same_questions_is_posted_again() {
        let w = world().await;
        w.asked().await;
        w.apply(answered()).await;
        w.sync().await;
        // The agent lost the answers (a restart) and asks the same again.
        w.apply(TaskEvent::QuestionsAsked(questions())).await;
        w.sync().await;
        assert_eq!(w.forge.comments_with("The worker has questions"), 2);
    }

    #[tokio::test]
    async fn app_decisions_are_told_even_when_the_mirror_catches_up_late() {
        let w = world().await;
        w.asked().await;
        w.apply(answered()).await;
        w.apply(TaskEvent::PlanProposed("# Plan".into())).await;
        w.sync().await;
        // Approved in the app, and the work done, before the mirror runs again (a crash
        // delayed it).
        w.apply(TaskEvent::PlanApproved).await;
        w.apply(TaskEvent::AgentFinished).await;
        w.sync().await;
        assert_eq!(w.forge.comments_with("Answered in mainloop"), 1);
        assert_eq!(w.forge.comments_with("Plan approved in mainloop"), 1);
        w.sync().await;
        assert_eq!(w.forge.comments_with("Plan approved in mainloop"), 1);
    }

    #[tokio::test]
    async fn a_plan_posted_but_unrecorded_and_then_approved_in_the_app_is_told() {
        let w = world().await;
        w.asked().await;
        w.apply(answered()).await;
        w.apply(TaskEvent::PlanProposed("# Plan".into())).await;
        w.forge.lose_next("comment");
        w.sync().await; // the plan is on the issue; mainloop does not know
        w.apply(TaskEvent::PlanApproved).await;
        w.apply(TaskEvent::AgentFinished).await;
        w.sync().await;
        assert_eq!(w.forge.comments_with("The worker's plan"), 1);
        assert_eq!(w.forge.comments_with("Plan approved in mainloop"), 1);
        assert!(w.mirror().await.pending.is_empty());
    }

    #[tokio::test]
    async fn a_pull_request_whose_opening_went_unrecorded_is_adopted() {
        let w = world().await;
        w.asked().await;
        let wt = mainloop_git::Worktree {
            path: std::path::PathBuf::from("/nowhere"),
            branch: "mainloop/abc-write-a-note".into(),
            base: "main".into(),
        };
        w.forge.lose_next("open_pull_request");
        let mut c = context(&w.rt, w.task).await.unwrap().unwrap();
        assert!(open_pull_request(&mut c, &wt).await.is_err());
        c.save().await.unwrap(); // e.g. the outage note
        let mut c = context(&w.rt, w.task).await.unwrap().unwrap();
        let pr = open_pull_request(&mut c, &wt).await.unwrap();
        assert_eq!(w.forge.0.lock().unwrap().pulls.len(), 1);
        assert_eq!(pr.number, w.forge.0.lock().unwrap().pulls[0].0);
    }

    #[tokio::test]
    async fn a_merge_whose_answer_was_lost_ends_merged_not_failed() {
        let w = world().await;
        w.asked().await;
        let branch = "mainloop/abc-write-a-note";
        {
            let mut s = w.forge.0.lock().unwrap();
            s.next += 1;
            let n = s.next;
            s.pulls.push((n, branch.into(), false));
        }
        let number = w.forge.0.lock().unwrap().pulls[0].0;
        let mut c = context(&w.rt, w.task).await.unwrap().unwrap();
        c.m.pr = Some(pr(number, false));
        c.save().await.unwrap();
        for event in [
            answered(),
            TaskEvent::PlanProposed("# Plan".into()),
            TaskEvent::PlanApproved,
            TaskEvent::AgentFinished,
            TaskEvent::ChecksPassed,
            TaskEvent::ReviewApproved,
        ] {
            w.apply(event).await;
        }
        let (_, task) = load(&w.rt, w.task).await.unwrap().unwrap();
        w.forge.lose_next("merge_pull_request");
        let ctx = w.job("task.merge", json!({"task_id": w.task}));
        merge(&w.rt, &ctx, &task).await.unwrap(); // merged; the answer lost: retry later
        assert_eq!(w.state().await, TaskState::Review);
        merge(&w.rt, &ctx, &task).await.unwrap();
        assert_eq!(w.state().await, TaskState::Merged);
    }
}
