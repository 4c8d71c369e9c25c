//! A forge task's mirror record (the `data` of its `task_forge` row) and the context a
//! forge step works in: the task, its repository, the record as stored and as changed
//! so far, and the ledger of writes. Writes go through [`Ctx::once`], which records a
//! write as begun before making it and finds it again instead of repeating it.

use super::error::FlowError;
use super::ledger::{Key, Ledger};
use super::{ForgeSettings, MARKER};
use crate::Runtime;
use crate::task::load;
use mainloop_domain::records::Task;
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::TaskForge;
use mainloop_forge::{
    Cursor, FeedbackCursor, Forge, ForgeError, IssueRef, NewPullRequest, PullRequest, RepoRef,
};
use serde::{Deserialize, Serialize};

/// What the forge shows of a task, as far as mainloop made or read it. Stored as flat
/// JSON (the groups are flattened), in the field names it has always had.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Mirror {
    #[serde(flatten)]
    pub issue: IssueMirror,
    #[serde(flatten)]
    pub questions: QuestionsMirror,
    #[serde(flatten)]
    pub plan: PlanMirror,
    #[serde(flatten)]
    pub pull: PullMirror,
    #[serde(flatten)]
    pub ci: CiMirror,
    /// The failure last told (its version and reason).
    pub failure_posted: Option<String>,
    /// The live watch chain; a watch job of another generation stops.
    pub watch_gen: u64,
    /// Set while the forge is unreachable, so the outage is reported once.
    pub outage: Option<String>,
    /// Forge writes begun and not yet recorded (see [`Ledger`]): after a crash, each is
    /// looked up on the forge before it is made again.
    pub pending: Vec<String>,
}

/// The plan issue.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct IssueMirror {
    pub issue_url: Option<String>,
    /// Where reading the issue's comments left off.
    pub issue_cursor: Cursor,
    /// The issue (and an open pull request) closed at the end.
    pub closed: bool,
}

/// The questions on the issue.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct QuestionsMirror {
    /// The question set last posted (its key), so each set is posted once.
    pub questions_posted: Option<String>,
    /// Answers arrived on the forge (so the app-side acknowledgement is not posted).
    pub answered_on_forge: bool,
    /// The question set whose answers were told on the issue.
    pub answers_acknowledged: Option<String>,
}

/// The plan on the issue.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PlanMirror {
    pub plan_comment: Option<u64>,
    pub plan_posted: Option<String>,
    pub plan_decided_on_forge: bool,
    pub plan_acknowledged: bool,
}

/// The pushed branch and the pull request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PullMirror {
    pub pr: Option<PullRequest>,
    pub pushed_sha: Option<String>,
    /// The draft pull request is open but not yet announced on the issue.
    pub draft_unannounced: bool,
    /// The last pushed commit the pull request was told about.
    pub narrated_sha: Option<String>,
    pub ready_marked: bool,
    pub review_round_announced: Option<String>,
    pub feedback_cursor: FeedbackCursor,
}

/// CI watched for a commit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CiMirror {
    /// CI is watched for this commit, since this time (ms).
    pub ci_sha: Option<String>,
    pub ci_since: Option<i64>,
    pub no_ci: bool,
    /// The commit CI last failed on: a fix round that pushes nothing new is not checked
    /// again.
    pub failed_sha: Option<String>,
}

/// A write on the forge, to be made once (see [`Ctx::once`]).
pub(crate) enum Write<'a> {
    /// A comment on an issue or pull request; the marker and the key's tag are added.
    Comment { number: u64, body: &'a str },
    /// The plan issue, found again by `tag` (added to the body with the marker).
    Issue {
        title: &'a str,
        body: &'a str,
        tag: &'a str,
    },
    /// The draft pull request, found again by its branch.
    PullRequest(NewPullRequest<'a>),
}

/// What a write made (or found made).
#[derive(Debug)]
pub(crate) enum Made {
    Comment(u64),
    Issue(IssueRef),
    Pull(PullRequest),
}

/// Where a forge step works.
pub(crate) struct Ctx<'a> {
    pub rt: &'a Runtime,
    pub fs: &'a ForgeSettings,
    pub user: UserId,
    pub task: Task,
    pub repo: RepoRef,
    /// The record with this step's changes.
    pub rec: TaskForge,
    pub m: Mirror,
    /// The record as stored, which [`Ctx::once`] extends without saving `m`'s changes.
    stored: TaskForge,
    pub ledger: Ledger,
}

/// Loads what a forge step works on; `None` when the task is gone or not on a forge.
pub(crate) async fn context(rt: &Runtime, id: TaskId) -> Result<Option<Ctx<'_>>, FlowError> {
    let Some(fs) = rt.inner.config.forge.as_ref() else {
        return Ok(None);
    };
    let Some((user, task)) = load(rt, id).await? else {
        return Ok(None);
    };
    let Some(rec) = rt
        .inner
        .engine
        .task_forge(id)
        .await
        .map_err(|e| FlowError::Store(e.to_string()))?
    else {
        return Ok(None);
    };
    let Ok(repo) = RepoRef::parse(&rec.repo, &fs.web_host) else {
        return Err(FlowError::Fatal(format!(
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
        ledger: Ledger::recovering(&m.pending),
        m,
    }))
}

impl Ctx<'_> {
    pub(crate) fn f(&self) -> &dyn Forge {
        self.fs.forge.as_ref()
    }

    /// The record with everything done so far. Writes begun and not known to be done
    /// stay pending.
    pub(crate) fn record(&mut self) -> Result<TaskForge, FlowError> {
        self.m.pending = self.ledger.pending();
        self.rec.data =
            serde_json::to_value(&self.m).map_err(|e| FlowError::Fatal(e.to_string()))?;
        self.rec.updated_at = mainloop_engine::now();
        Ok(self.rec.clone())
    }

    pub(crate) async fn save(&mut self) -> Result<(), FlowError> {
        let rec = self.record()?;
        self.put(&rec).await?;
        self.stored = rec;
        Ok(())
    }

    /// `rec` was stored by other means (with a transition).
    pub(crate) fn stored_as(&mut self, rec: TaskForge) {
        self.stored = rec;
    }

    async fn put(&self, rec: &TaskForge) -> Result<(), FlowError> {
        self.rt
            .inner
            .engine
            .put_task_forge(rec)
            .await
            .map_err(|e| FlowError::Store(e.to_string()))
    }

    /// Makes `change` to the stored record alone (and to the working copy), leaving the
    /// rest of the working copy unsaved: what this step has read or decided so far
    /// (cursors, flags) is saved only with its outcome, so a crash never skips a reply
    /// nor loses a decision.
    pub(crate) async fn save_only(
        &mut self,
        change: impl Fn(&mut Mirror),
    ) -> Result<(), FlowError> {
        change(&mut self.m);
        let mut stored: Mirror =
            serde_json::from_value(self.stored.data.clone()).unwrap_or_default();
        change(&mut stored);
        let mut rec = self.stored.clone();
        rec.data = serde_json::to_value(&stored).map_err(|e| FlowError::Fatal(e.to_string()))?;
        rec.updated_at = mainloop_engine::now();
        self.put(&rec).await?;
        self.stored = rec;
        Ok(())
    }

    /// Makes `write` once under `key`: a write a crashed attempt began is looked up on
    /// the forge first (by its hidden tag, or for a pull request by its branch); one not
    /// found is recorded as begun, then made.
    pub(crate) async fn once(&mut self, key: Key, write: Write<'_>) -> Result<Made, FlowError> {
        if self.ledger.was_begun(&key)
            && let Some(found) = self.find(&key, &write).await?
        {
            self.ledger.done(&key);
            return Ok(found);
        }
        let pending = key.to_string();
        self.save_only(|m| m.pending.push(pending.clone())).await?;
        self.ledger.begin(key.clone());
        let made = self.make(&key, write).await?;
        self.ledger.done(&key);
        Ok(made)
    }

    async fn find(&self, key: &Key, write: &Write<'_>) -> Result<Option<Made>, FlowError> {
        Ok(match write {
            Write::Comment { number, .. } => {
                let tag = key.tag();
                let (all, _) = self
                    .f()
                    .comments_since(&self.repo, *number, &Cursor::default())
                    .await?;
                all.iter()
                    .find(|x| x.body.contains(&tag))
                    .map(|x| Made::Comment(x.id))
            }
            Write::Issue { tag, .. } => self
                .f()
                .find_issue(&self.repo, &self.fs.label, tag)
                .await?
                .map(Made::Issue),
            Write::PullRequest(new) => self.pull_request_from(new.head).await?.map(Made::Pull),
        })
    }

    async fn make(&self, key: &Key, write: Write<'_>) -> Result<Made, FlowError> {
        let f = self.f();
        Ok(match write {
            Write::Comment { number, body } => {
                let body = format!("{body}\n\n{MARKER}\n{}", key.tag());
                Made::Comment(f.comment(&self.repo, number, &body).await?.id)
            }
            Write::Issue { title, body, tag } => {
                let body = format!("{body}\n\n{MARKER}\n{tag}");
                let labels = [self.fs.label.as_str()];
                Made::Issue(f.create_issue(&self.repo, title, &body, &labels).await?)
            }
            Write::PullRequest(new) => {
                let head = new.head;
                match f.open_pull_request(&self.repo, new).await {
                    Ok(pr) => Made::Pull(pr),
                    // Opening a second one for the branch is refused: adopt the first.
                    Err(ForgeError::Rejected(why)) => Made::Pull(
                        self.pull_request_from(head)
                            .await?
                            .ok_or(ForgeError::Rejected(why))?,
                    ),
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }

    /// The open pull request from `branch`, if there is one.
    async fn pull_request_from(&self, branch: &str) -> Result<Option<PullRequest>, FlowError> {
        let open = self.f().open_pull_requests(&self.repo, 100).await?;
        match open.iter().find(|p| p.head == branch) {
            Some(p) => Ok(Some(self.f().pull_request(&self.repo, p.number).await?)),
            None => Ok(None),
        }
    }

    /// Posts a comment once (see [`Ctx::once`]); returns its id.
    pub(crate) async fn comment(
        &mut self,
        number: u64,
        key: Key,
        body: &str,
    ) -> Result<u64, FlowError> {
        match self.once(key, Write::Comment { number, body }).await? {
            Made::Comment(id) => Ok(id),
            other => Err(FlowError::Fatal(format!(
                "a comment came back as {other:?}"
            ))),
        }
    }

    /// Whether `login`'s replies may steer the worker: the token's own account (usually
    /// the person running mainloop) or a configured trusted login.
    async fn trusted(&self, login: &str) -> Result<bool, FlowError> {
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

    /// Keeps what trusted people wrote (and not mainloop's own words); the rest is
    /// logged and dropped.
    pub(crate) async fn only_trusted<T>(
        &self,
        items: Vec<T>,
        author: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, FlowError> {
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

    pub(crate) fn issue(&self) -> Option<u64> {
        self.rec.issue_number.and_then(|n| u64::try_from(n).ok())
    }

    /// Where progress is narrated: the pull request once there is one, else the issue.
    pub(crate) fn thread(&self) -> Option<u64> {
        self.m
            .pull
            .pr
            .as_ref()
            .map(|p| p.number)
            .or_else(|| self.issue())
    }
}
