//! The fake's memory: repositories and what hangs off them (issues and pull requests
//! sharing one number sequence, comments, reactions, reviews, check runs), the users
//! behind the tokens, rate-limit buckets, the simulated outage, request statistics and
//! webhook receivers (rendered as GitHub's JSON by `render.rs`).

use crate::Error;
pub use crate::faults::{Hang, Outage, RateLimit, SecondaryLimit, Stats};
use crate::git::{self, Identity};
use crate::webhooks::{self, Delivery, Hook};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

/// Requests per hour, as GitHub gives a personal token (and an anonymous client).
const USER_LIMIT: u64 = 5000;
const ANON_LIMIT: u64 = 60;

/// Now, to the second (GitHub's timestamps carry no fraction).
pub(crate) fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

pub(crate) fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn ts_opt(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// A GraphQL global id: a type prefix and the database id, opaque to clients.
pub(crate) fn node_id(prefix: &str, id: u64) -> String {
    format!("{prefix}_kw{}", STANDARD_NO_PAD.encode(id.to_be_bytes()))
}

#[derive(Clone, Debug)]
pub(crate) struct Repo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub path: PathBuf,
    pub created_at: OffsetDateTime,
    next_number: u64,
    pub threads: BTreeMap<u64, Thread>,
    pub comments: Vec<IssueComment>,
    pub reactions: Vec<Reaction>,
    pub reviews: Vec<Review>,
    pub review_comments: Vec<ReviewComment>,
    pub check_runs: Vec<CheckRun>,
}

impl Repo {
    pub(crate) fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Issues and pull requests draw from one sequence, like on GitHub.
    pub(crate) fn take_number(&mut self) -> u64 {
        self.next_number += 1;
        self.next_number
    }
}

/// An issue, or the issue side of a pull request.
#[derive(Clone, Debug)]
pub(crate) struct Thread {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub user: String,
    pub labels: Vec<String>,
    pub open: bool,
    pub state_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub closed_at: Option<OffsetDateTime>,
    pub pr: Option<Pr>,
}

#[derive(Clone, Debug)]
pub(crate) struct Pr {
    pub id: u64,
    pub head_ref: String,
    pub base_ref: String,
    /// The head's tip when last looked at; the branch itself is the truth while open.
    pub head_sha: String,
    pub base_sha: String,
    pub draft: bool,
    pub merged_at: Option<OffsetDateTime>,
    pub merged_by: Option<String>,
    pub merge_commit_sha: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct IssueComment {
    pub id: u64,
    pub number: u64,
    pub body: String,
    pub user: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub(crate) struct Reaction {
    pub id: u64,
    pub comment_id: u64,
    pub content: String,
    pub user: String,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub(crate) struct Review {
    pub id: u64,
    pub number: u64,
    pub user: String,
    pub body: String,
    pub state: String,
    pub commit_id: String,
    pub submitted_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug)]
pub(crate) struct ReviewComment {
    pub id: u64,
    pub number: u64,
    pub review_id: u64,
    pub user: String,
    pub body: String,
    pub path: String,
    pub line: Option<u64>,
    pub side: String,
    pub commit_id: String,
    pub in_reply_to: Option<u64>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub(crate) struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub details_url: Option<String>,
    pub external_id: Option<String>,
    pub output: Value,
    pub started_at: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
    /// An Actions job log; when present the check run is that job (same id).
    pub log: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    pub limit: u64,
    pub used: u64,
    pub reset: i64,
}

impl Bucket {
    pub(crate) const fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

#[derive(Debug)]
struct Secondary {
    until: i64,
    retry_after: u64,
    requests: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    next_id: u64,
    /// By lower-case `owner/name` (GitHub's names are case-insensitive).
    pub repos: HashMap<String, Repo>,
    hooks: Vec<Hook>,
    buckets: HashMap<(String, &'static str), Bucket>,
    secondary: Option<Secondary>,
    outage: Option<Outage>,
    /// Hangs still to serve, in order: a request takes the first one that matches it.
    hangs: Vec<Hang>,
    /// Merges still to lose a race on their base branch (see [`Shared::merge_race_hit`]).
    merge_races: u64,
    stats: Stats,
}

impl State {
    fn count_injected(&mut self, what: String) {
        *self.stats.injected.entry(what).or_default() += 1;
    }

    /// Ids are global and increasing, so every kind of object sorts by creation.
    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn repo(&mut self, owner: &str, name: &str) -> Result<&mut Repo, Error> {
        self.repos
            .get_mut(&repo_key(owner, name))
            .ok_or_else(Error::not_found)
    }
}

fn repo_key(owner: &str, name: &str) -> String {
    format!("{}/{}", owner.to_lowercase(), name.to_lowercase())
}

/// Shared by every handler.
#[derive(Debug)]
pub(crate) struct Shared {
    pub base_url: String,
    pub root: PathBuf,
    tokens: HashMap<String, String>,
    /// Login → numeric user id.
    users: BTreeMap<String, u64>,
    state: Mutex<State>,
    /// Serialises what moves refs (creating repositories, merging).
    pub git_lock: tokio::sync::Mutex<()>,
    hooks_tx: mpsc::UnboundedSender<Delivery>,
}

/// What an API request is charged to.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub login: Option<String>,
    pub resource: &'static str,
}

/// The result of checking the limits before a request runs.
pub(crate) enum Gate {
    Pass,
    Primary(Bucket),
    Secondary(u64),
}

impl Shared {
    pub(crate) fn new(base_url: String, root: PathBuf, tokens: &[(String, String)]) -> Arc<Self> {
        let mut users = BTreeMap::new();
        for (_, login) in tokens {
            let next = 1000 + users.len() as u64;
            users.entry(login.clone()).or_insert(next);
        }
        let (hooks_tx, hooks_rx) = mpsc::unbounded_channel();
        webhooks::spawn_sender(hooks_rx);
        Arc::new(Self {
            base_url,
            root,
            tokens: tokens.iter().cloned().collect(),
            users,
            state: Mutex::new(State::default()),
            git_lock: tokio::sync::Mutex::new(()),
            hooks_tx,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Handlers never panic while holding it; if one did, the state is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn login_for(&self, token: &str) -> Option<&str> {
        self.tokens.get(token).map(String::as_str)
    }

    pub(crate) fn repo_path(&self, owner: &str, name: &str) -> PathBuf {
        self.root.join(owner).join(format!("{name}.git"))
    }

    /// A copy of a repository's record (git work happens outside the lock).
    pub(crate) fn repo(&self, owner: &str, name: &str) -> Result<Repo, Error> {
        self.lock().repo(owner, name).cloned()
    }

    // ---- test control ------------------------------------------------------------

    pub(crate) async fn create_repo(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
    ) -> Result<Value, Error> {
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !valid(owner) || !valid(name) || !git::valid_branch(default_branch) {
            return Err(Error::validation(json!([
                {"resource": "Repository", "code": "invalid", "field": "name"}
            ])));
        }
        let _guard = self.git_lock.lock().await;
        if self.lock().repos.contains_key(&repo_key(owner, name)) {
            return Err(Error::validation(json!([{
                "resource": "Repository", "code": "custom", "field": "name",
                "message": "name already exists on this account"
            }])));
        }
        let path = self.repo_path(owner, name);
        if tokio::fs::try_exists(&path).await? {
            return Err(Error::validation(json!([{
                "resource": "Repository", "code": "custom", "field": "name",
                "message": "name already exists on this account"
            }])));
        }
        git::init(
            &path,
            default_branch,
            &format!("# {name}\n"),
            Identity {
                name: owner,
                email: &format!("{owner}@users.noreply.github.com"),
            },
        )
        .await?;
        let mut st = self.lock();
        let id = st.id();
        let repo = Repo {
            id,
            owner: owner.to_owned(),
            name: name.to_owned(),
            default_branch: default_branch.to_owned(),
            path,
            created_at: now(),
            next_number: 0,
            threads: BTreeMap::new(),
            comments: Vec::new(),
            reactions: Vec::new(),
            reviews: Vec::new(),
            review_comments: Vec::new(),
            check_runs: Vec::new(),
        };
        let v = self.repo_json(&repo);
        st.repos.insert(repo_key(owner, name), repo);
        Ok(v)
    }

    pub(crate) fn attach_log(
        &self,
        owner: &str,
        name: &str,
        id: u64,
        log: &str,
    ) -> Result<(), Error> {
        let mut st = self.lock();
        let run = st
            .repo(owner, name)?
            .check_runs
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(Error::not_found)?;
        run.log = Some(log.to_owned());
        Ok(())
    }

    pub(crate) fn job_log(&self, job_id: u64) -> Option<String> {
        self.lock()
            .repos
            .values()
            .flat_map(|r| r.check_runs.iter())
            .find(|c| c.id == job_id)
            .and_then(|c| c.log.clone())
    }

    pub(crate) fn set_rate_limit(&self, limit: RateLimit) {
        let reset = unix_now() + i64::try_from(limit.reset_in_secs).unwrap_or(i64::MAX / 2);
        let mut st = self.lock();
        let keys = self.all_bucket_keys();
        for key in keys {
            let cap = if key.0.is_empty() {
                ANON_LIMIT
            } else {
                USER_LIMIT
            };
            st.buckets.insert(
                key,
                Bucket {
                    limit: cap,
                    used: cap.saturating_sub(limit.remaining),
                    reset,
                },
            );
        }
    }

    fn all_bucket_keys(&self) -> Vec<(String, &'static str)> {
        let mut keys = vec![(String::new(), "core"), (String::new(), "graphql")];
        for login in self.users.keys() {
            keys.push((login.clone(), "core"));
            keys.push((login.clone(), "graphql"));
        }
        keys
    }

    /// Back to full quota and no secondary limit.
    pub(crate) fn clear_limits(&self) {
        let mut st = self.lock();
        st.buckets.clear();
        st.secondary = None;
    }

    pub(crate) fn set_secondary_limit(&self, limit: SecondaryLimit) {
        self.lock().secondary = Some(Secondary {
            until: unix_now() + i64::try_from(limit.retry_after_secs).unwrap_or(0),
            retry_after: limit.retry_after_secs,
            requests: limit.requests,
        });
    }

    pub(crate) fn set_outage(&self, outage: Option<Outage>) {
        self.lock().outage = outage;
    }

    pub(crate) fn set_hangs(&self, hangs: Vec<Hang>) {
        self.lock().hangs = hangs;
    }

    pub(crate) fn set_merge_races(&self, merges: u64) {
        self.lock().merge_races = merges;
    }

    /// Whether this merge loses a race on its base branch (and counts it down): another
    /// merge lands between its mergeability check and its update of the base.
    pub(crate) fn merge_race_hit(&self) -> bool {
        let mut st = self.lock();
        if st.merge_races == 0 {
            return false;
        }
        st.merge_races -= 1;
        st.count_injected("merge race".to_owned());
        true
    }

    pub(crate) fn add_webhook(&self, url: &str, secret: &str) -> u64 {
        let mut st = self.lock();
        let id = st.id();
        st.hooks.push(Hook {
            id,
            url: url.to_owned(),
            secret: secret.to_owned(),
        });
        id
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    pub(crate) fn reset_stats(&self) {
        self.lock().stats = Stats::default();
    }

    // ---- per-request bookkeeping ------------------------------------------------------

    pub(crate) fn count_request(&self, route: String) {
        let mut st = self.lock();
        st.stats.requests += 1;
        *st.stats.by_route.entry(route).or_default() += 1;
    }

    pub(crate) fn count_not_modified(&self) {
        self.lock().stats.not_modified += 1;
    }

    /// The outage status this request gets, if one is on (and counts it down).
    pub(crate) fn outage_hit(&self) -> Option<u16> {
        let mut st = self.lock();
        let o = st.outage.as_mut()?;
        let status = o.status;
        if let Some(n) = o.requests.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.outage = None;
            }
        }
        st.count_injected(format!("outage {status}"));
        Some(status)
    }

    /// The hang this request (`route`: `"METHOD /pattern"`) gets, if one is on for it
    /// (and counts it down).
    pub(crate) fn hang_hit(&self, method: &str, route: &str) -> Option<Hang> {
        let mut st = self.lock();
        let at = st.hangs.iter().position(|h| {
            h.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && h.route.as_deref().is_none_or(|r| r == route)
        })?;
        let h = &mut st.hangs[at];
        let hit = h.clone();
        if let Some(n) = h.requests.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.hangs.remove(at);
            }
        }
        st.count_injected(match hit.status {
            _ if hit.cut => "hang cut".to_owned(),
            Some(status) => format!("hang {status}"),
            None => "hang".to_owned(),
        });
        Some(hit)
    }

    fn bucket<'s>(st: &'s mut State, caller: &Caller) -> &'s mut Bucket {
        let login = caller.login.clone().unwrap_or_default();
        let cap = if login.is_empty() {
            ANON_LIMIT
        } else {
            USER_LIMIT
        };
        let now = unix_now();
        let b = st
            .buckets
            .entry((login, caller.resource))
            .or_insert(Bucket {
                limit: cap,
                used: 0,
                reset: now + 3600,
            });
        if now >= b.reset {
            *b = Bucket {
                limit: cap,
                used: 0,
                reset: now + 3600,
            };
        }
        b
    }

    /// Whether the request may run, given the secondary and primary limits.
    pub(crate) fn gate(&self, caller: &Caller) -> Gate {
        let mut st = self.lock();
        let now = unix_now();
        if let Some(s) = st.secondary.as_mut() {
            let by_time = s.requests.is_none() && now < s.until;
            let by_count = s.requests.is_some_and(|n| n > 0);
            if by_time || by_count {
                let retry = if by_time {
                    u64::try_from(s.until - now).unwrap_or(1).max(1)
                } else {
                    s.retry_after
                };
                if let Some(n) = s.requests.as_mut() {
                    *n -= 1;
                }
                st.count_injected("secondary 429".to_owned());
                return Gate::Secondary(retry);
            }
            st.secondary = None;
        }
        let b = *Self::bucket(&mut st, caller);
        if b.remaining() == 0 {
            st.count_injected("primary 403".to_owned());
            Gate::Primary(b)
        } else {
            Gate::Pass
        }
    }

    /// Charges one request (or only looks, for a 304) and returns the bucket after.
    pub(crate) fn charge(&self, caller: &Caller, consume: bool) -> Bucket {
        let mut st = self.lock();
        let b = Self::bucket(&mut st, caller);
        if consume {
            b.used = (b.used + 1).min(b.limit);
        }
        *b
    }

    pub(crate) fn user_id(&self, login: &str) -> u64 {
        self.users.get(login).copied().unwrap_or(0)
    }

    pub(crate) fn is_user(&self, login: &str) -> bool {
        self.users.contains_key(login)
    }

    // ---- webhooks -----------------------------------------------------------------------

    /// Queues an event for every registered receiver; `object` holds the event's own
    /// fields (`issue` and `comment`, `pull_request`, …).
    pub(crate) fn emit(&self, event: &str, action: &str, repo: &Repo, sender: &str, object: Value) {
        let hooks = self.lock().hooks.clone();
        if hooks.is_empty() {
            return;
        }
        let mut payload = json!({
            "action": action,
            "repository": self.repo_json(repo),
            "sender": self.user(sender),
        });
        if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), object) {
            p.extend(extra);
        }
        let delivery = Delivery {
            event: event.to_owned(),
            payload,
            hooks,
        };
        if self.hooks_tx.send(delivery).is_err() {
            tracing::warn!(event, "webhook sender stopped; event dropped");
        }
    }
}

/// Head and base tips (and mergeability when asked) of a pull request, read from git.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub head_sha: String,
    pub base_sha: String,
    /// `None`: not computed (lists); `Some(None)`: unknown; `Some(Some(b))`: known.
    pub mergeable: Option<Option<bool>>,
}

pub(crate) fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
