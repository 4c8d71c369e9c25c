//! Work delivered to a repository on a forge: the commit pushed and a draft pull
//! request opened once (and narrated), the forge's CI watched for the pushed commit,
//! and the pull request merged — tried again when it loses a race on its base, and
//! when the forge finds it unmergeable, brought up to date with its base (checked again
//! when that merges cleanly, sent back to the agent when it conflicts).

use super::MARKER;
use super::error::FlowError;
use super::jobs::{finish, job_error, lock, note_outage, retry_later, schedule_watch};
use super::ledger::Key;
use super::state::{Ctx, Made, Write, context};
use super::watch::{CiOutcome, record_checks};
use crate::Runtime;
use crate::delivery::Delivery;
use crate::task::{apply, fail, record_diffstat, require_changes, status, workspace, worktree};
use mainloop_domain::UserId;
use mainloop_domain::records::{Task, Workplace};
use mainloop_domain::task::TaskEvent;
use mainloop_engine::{JobContext, JobError};
use mainloop_forge::{ForgeError, MergeOutcome, NewPullRequest, PrState, PullRequest, RepoRef};
use mainloop_git::Worktree;

/// How many times in a row a merge that lost a race on its base is tried again at once
/// before the job waits a poll interval and tries again.
const MERGE_RACES: usize = 3;

/// A task whose work goes to a repository on the forge.
pub(crate) struct Hosted {
    /// The clone and push URL (`None`: the record names no repository of the forge).
    url: Option<String>,
}

impl Hosted {
    /// The task's hosted delivery, when it was created on the configured forge (its
    /// `repo` is then the forge's `owner/name`).
    pub(crate) fn for_task(rt: &Runtime, task: &Task) -> Option<Self> {
        if task.workplace != Workplace::Forge {
            return None;
        }
        let fs = rt.inner.config.forge.as_ref()?;
        let url = RepoRef::parse(&task.repo, &fs.web_host)
            .ok()
            .map(|repo| fs.git_url_for(&repo));
        Some(Self { url })
    }
}

impl Delivery for Hosted {
    fn source(&self, task: &Task) -> String {
        self.url.clone().unwrap_or_else(|| task.repo.clone())
    }

    async fn publish(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        task: &Task,
        wt: &Worktree,
    ) -> Result<(), JobError> {
        publish(rt, ctx, task, wt).await
    }

    async fn check(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        _user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        // Best effort: review works without the diffstat.
        if let Ok(wt) = worktree(rt, task, &self.source(task)).await {
            record_diffstat(rt, task, &wt).await;
        }
        start_ci(rt, ctx, task).await
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

/// `task.commit` on a forge: unless the work changed nothing (the task fails), push the
/// branch, open the draft pull request once, and narrate.
async fn publish(
    rt: &Runtime,
    ctx: &JobContext,
    task: &Task,
    wt: &Worktree,
) -> Result<(), JobError> {
    // Work that changes nothing is never pushed, nor offered for review in a pull request.
    if !require_changes(rt, task, wt).await? {
        return Ok(());
    }
    let guard = lock(rt, task.id).await;
    let Some(mut c) = context(rt, task.id).await.map_err(job_error)? else {
        return Ok(());
    };
    let url = c.fs.git_url_for(&c.repo);
    let sha = match rt.inner.git.push_branch(wt, &url).await {
        Ok(sha) => sha,
        Err(e) => {
            // The network or the remote: try again later, saying so in the transcript.
            let wait = c.fs.poll_interval;
            let e = ForgeError::Unavailable(format!("push failed: {e}"));
            note_outage(&mut c, &e).await.map_err(job_error)?;
            drop(guard);
            return retry_later(ctx, wait).await;
        }
    };
    c.m.pull.pushed_sha = Some(sha.clone());
    c.save().await.map_err(job_error)?;
    let result = announce(&mut c, wt, &sha).await;
    finish(&mut c, ctx, guard, result).await
}

/// Opens the draft pull request once and tells the issue; later pushes are told on it.
async fn announce(c: &mut Ctx<'_>, wt: &Worktree, sha: &str) -> Result<(), FlowError> {
    if c.m.pull.pr.is_none() {
        let pr = open_pull_request(c, wt).await?;
        c.rec.pr_number = i64::try_from(pr.number).ok();
        c.m.pull.draft_unannounced = true;
        c.m.pull.narrated_sha = Some(sha.to_owned());
        status(
            c.rt,
            c.user,
            c.task.id,
            &format!("draft pull request: {}", pr.url),
        )
        .await;
        c.m.pull.pr = Some(pr);
        c.save().await?;
    }
    let Some(pr) = c.m.pull.pr.clone() else {
        return Ok(());
    };
    if c.m.pull.draft_unannounced {
        if let Some(issue) = c.issue() {
            let body = format!("Draft pull request: {}", pr.url);
            c.comment(issue, Key::Draft(pr.number), &body).await?;
        }
        c.m.pull.draft_unannounced = false;
        c.save().await?;
    } else if c.m.pull.narrated_sha.as_deref() != Some(sha) {
        let body = format!("Pushed an update: `{}`.", short(sha));
        c.comment(pr.number, Key::Pushed(sha.to_owned()), &body)
            .await?;
        c.m.pull.narrated_sha = Some(sha.to_owned());
        c.save().await?;
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Opens the task's draft pull request, or finds the one an earlier attempt opened
/// without recording it.
pub(crate) async fn open_pull_request(
    c: &mut Ctx<'_>,
    wt: &Worktree,
) -> Result<PullRequest, FlowError> {
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
    let new = NewPullRequest {
        head: &wt.branch,
        base: &wt.base,
        title: &title,
        body: &body,
        draft: true,
    };
    match c.once(Key::PullRequest, Write::PullRequest(new)).await? {
        Made::Pull(pr) => Ok(pr),
        other => Err(FlowError::Fatal(format!(
            "the pull request came back as {other:?}"
        ))),
    }
}

/// `task.checks` on a forge: start watching CI for the pushed commit — unless this fix
/// round left the commit CI failed on unchanged, which fails the round at once.
async fn start_ci(rt: &Runtime, ctx: &JobContext, task: &Task) -> Result<(), JobError> {
    let guard = lock(rt, task.id).await;
    let Some(mut c) = context(rt, task.id).await.map_err(job_error)? else {
        return Ok(());
    };
    let Some(sha) = c.m.pull.pushed_sha.clone() else {
        drop(guard);
        return fail(rt, task.id, "nothing was pushed to check".into()).await;
    };
    let round = c.task.core.check_round;
    if round > 0 && c.m.ci.failed_sha.as_deref() == Some(sha.as_str()) {
        if let Err(e) = unchanged(&mut c, &sha, round).await {
            return finish(&mut c, ctx, guard, Err(e)).await;
        }
        drop(guard);
        let report = format!(
            "Your last fix round changed nothing: the branch is still at {}, the commit \
             CI failed on, so CI was not run again. Fix the failures reported before.",
            short(&sha)
        );
        return apply(rt, task.id, TaskEvent::ChecksFailed(report))
            .await
            .map(|_| ());
    }
    if c.m.ci.ci_sha.as_deref() != Some(sha.as_str()) {
        c.m.ci.ci_sha = Some(sha.clone());
        c.m.ci.ci_since = Some(mainloop_engine::now().as_millis());
        c.m.ci.no_ci = false;
    }
    status(
        rt,
        c.user,
        task.id,
        &format!("watching CI for {}", short(&sha)),
    )
    .await;
    schedule_watch(&mut c).await.map_err(job_error)
}

/// Tells the forge that a fix round left the commit CI failed on unchanged.
async fn unchanged(c: &mut Ctx<'_>, sha: &str, round: u32) -> Result<(), FlowError> {
    let text = format!(
        "The worker's fix round changed nothing: `{}` is the commit CI already failed on, \
         so it is not checked again.",
        short(sha)
    );
    if let Some(on) = c.thread() {
        let key = Key::Unchanged {
            sha: sha.to_owned(),
            round,
        };
        c.comment(on, key, &text).await?;
    }
    record_checks(c, CiOutcome::Failed, text.clone()).await;
    c.save().await
}

/// What a merge attempt came to.
enum Merging {
    Merged,
    /// Still losing races, or closed meanwhile (the watch ends the task): later.
    Later,
    /// Updating the branch with its base conflicted in these files.
    Conflict(Vec<String>),
    /// The branch was updated with its base and pushed: check it again.
    Updated,
    /// The forge will not merge it, and updating the branch changes nothing.
    Refused(String),
}

/// `task.merge` on a forge: merge the pull request.
async fn merge(rt: &Runtime, ctx: &JobContext, task: &Task) -> Result<(), JobError> {
    let guard = lock(rt, task.id).await;
    let Some(mut c) = context(rt, task.id).await.map_err(job_error)? else {
        return Ok(());
    };
    let Some(pr) = c.m.pull.pr.clone() else {
        drop(guard);
        return fail(rt, task.id, "there is no pull request to merge".into()).await;
    };
    let merging = match merge_in(&mut c, &pr).await {
        Ok(m) => m,
        Err(e) => return finish(&mut c, ctx, guard, Err(e)).await,
    };
    let wait = c.fs.poll_interval;
    drop(guard);
    let event = match merging {
        Merging::Merged => TaskEvent::Merged,
        Merging::Later => return retry_later(ctx, wait).await,
        Merging::Conflict(files) => TaskEvent::MergeConflict(files.join(", ")),
        Merging::Updated => TaskEvent::BranchUpdated,
        Merging::Refused(why) => TaskEvent::AgentFailed(format!("GitHub refused the merge: {why}")),
    };
    apply(rt, task.id, event).await.map(|_| ())
}

async fn merge_in(c: &mut Ctx<'_>, pr: &PullRequest) -> Result<Merging, FlowError> {
    for _ in 0..MERGE_RACES {
        let why = match c.f().merge_pull_request(&c.repo, pr.number).await {
            Ok(MergeOutcome::Merged) => return Ok(Merging::Merged),
            Ok(MergeOutcome::Raced(why)) => {
                // Another merge landed on the base meanwhile: the forge decides afresh.
                tracing::info!(task = %c.task.id, %why, "merge lost a race on the base; trying again");
                continue;
            }
            Ok(MergeOutcome::NotMergeable(why)) => why,
            Err(ForgeError::Rejected(why)) => why,
            Err(e) => return Err(e.into()),
        };
        // Merged already (by an attempt that died before recording it, or on GitHub), or
        // closed there (the watch cancels the task).
        let live = c.f().pull_request(&c.repo, pr.number).await?;
        match live.state {
            PrState::Merged => return Ok(Merging::Merged),
            PrState::Closed => return Ok(Merging::Later),
            // Approved before the mirror marked it ready (a crash in between): a draft
            // is not merged, whatever its branch; mark it ready and merge.
            PrState::Open if live.draft => {
                c.f().mark_ready_for_review(&c.repo, &live).await?;
            }
            PrState::Open => return update_branch(c, pr.number, why).await,
        }
    }
    Ok(Merging::Later)
}

/// The forge will not merge the branch as it stands: merge its base into it, like the
/// local path does on a conflict. A conflict goes back to the agent; a clean merge is
/// pushed and checked again; no change at all means the refusal was about something
/// else, which the human hears.
async fn update_branch(c: &mut Ctx<'_>, pr: u64, why: String) -> Result<Merging, FlowError> {
    let url = c.fs.git_url_for(&c.repo);
    let git = &c.rt.inner.git;
    let unavailable = |what: &str, e: mainloop_git::GitError| {
        FlowError::Forge(ForgeError::Unavailable(format!("{what}: {e}")))
    };
    // Resolving the repository fetches it, so the base is the forge's.
    let (_, wt) = workspace(c.rt, &c.task, &url)
        .await
        .map_err(|e| unavailable("could not fetch the repository", e))?;
    let files = git
        .merge_base_into_branch(&wt)
        .await
        .map_err(|e| unavailable("could not merge the base into the branch", e))?;
    if !files.is_empty() {
        return Ok(Merging::Conflict(files));
    }
    let sha = git
        .push_branch(&wt, &url)
        .await
        .map_err(|e| unavailable("push failed", e))?;
    if c.m.pull.pushed_sha.as_deref() == Some(sha.as_str()) {
        return Ok(Merging::Refused(why));
    }
    let body = format!(
        "The base branch moved on, so GitHub would not merge this as it was. Merged {} \
         into it (`{}`); checking it again.",
        wt.base,
        short(&sha)
    );
    c.comment(pr, Key::Updated(sha.clone()), &body).await?;
    status(
        c.rt,
        c.user,
        c.task.id,
        &format!(
            "updated the branch with {} as {}; checking again",
            wt.base,
            short(&sha)
        ),
    )
    .await;
    c.m.pull.pushed_sha = Some(sha.clone());
    c.m.pull.narrated_sha = Some(sha);
    c.save().await?;
    Ok(Merging::Updated)
}
