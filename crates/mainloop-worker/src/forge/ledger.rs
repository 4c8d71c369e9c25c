//! The write ledger: every write mainloop makes on the forge is named by a [`Key`],
//! recorded as begun (in the task's mirror record) before it is made, and carries the
//! key in a hidden tag, so a retry after a crash between the write and recording it
//! finds the issue, comment or pull request instead of making it again. The keys are
//! typed here and spelled as strings only in the record and in the tags, in the same
//! spelling as always, so records and tags written by earlier versions still match.

use std::fmt;

/// One of mainloop's writes on the forge for a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    /// The plan issue (found by its tag, [`Key::issue_tag`]).
    Issue,
    /// The draft pull request (found by its branch).
    PullRequest,
    /// A round of questions, by the digest of its signature.
    Questions(String),
    /// A plan posted for review, by the digest of its signature.
    Plan(String),
    /// Answers given in the app, told on the issue.
    Answered(String),
    /// A plan approved in the app, told on the issue (by the plan comment's id).
    PlanApproved(u64),
    /// "Ready for review" on the pull request.
    Ready(u64),
    /// Why an issue or pull request is being closed.
    Closed(u64),
    /// The task's failure, by the digest of its version and reason.
    Failure(String),
    /// The draft pull request announced on the issue.
    Draft(u64),
    /// A pushed update narrated on the pull request.
    Pushed(String),
    /// Replies to a human's comment, by its id.
    Late(u64),
    Invalid(u64),
    Thanks(u64),
    Decided(u64),
    ThumbsUp(u64),
    Feedback(u64),
    /// CI failed on a commit, in one check round (a round that changed nothing fails on
    /// the same commit again and is told again).
    CiFailed {
        sha: String,
        round: u32,
    },
    /// A fix round that left the commit CI failed on unchanged.
    Unchanged {
        sha: String,
        round: u32,
    },
    /// The approved branch updated with its base before merging.
    Updated(String),
    /// A key this version does not know (from a newer or older one): kept as it is.
    Other(String),
}

impl Key {
    /// The hidden tag a write carries.
    pub(crate) fn tag(&self) -> String {
        format!("<!-- mainloop-key:{self} -->")
    }

    /// The plan issue's tag names its task (issues are searched across the repository).
    pub(crate) fn issue_tag(task: impl fmt::Display) -> String {
        format!("<!-- mainloop-key:issue:{task} -->")
    }

    /// Whether a recovered write is a post the mirror relies on (settled before use).
    pub(crate) const fn is_post(&self) -> bool {
        matches!(self, Self::Questions(_) | Self::Plan(_))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Issue => f.write_str("issue"),
            Self::PullRequest => f.write_str("pr"),
            Self::Questions(d) => write!(f, "questions:{d}"),
            Self::Plan(d) => write!(f, "plan:{d}"),
            Self::Answered(d) => write!(f, "answered:{d}"),
            Self::PlanApproved(n) => write!(f, "plan-approved:{n}"),
            Self::Ready(n) => write!(f, "ready:{n}"),
            Self::Closed(n) => write!(f, "closed:{n}"),
            Self::Failure(d) => write!(f, "failure:{d}"),
            Self::Draft(n) => write!(f, "draft:{n}"),
            Self::Pushed(sha) => write!(f, "pushed:{sha}"),
            Self::Late(n) => write!(f, "late:{n}"),
            Self::Invalid(n) => write!(f, "invalid:{n}"),
            Self::Thanks(n) => write!(f, "thanks:{n}"),
            Self::Decided(n) => write!(f, "decided:{n}"),
            Self::ThumbsUp(n) => write!(f, "thumbs-up:{n}"),
            Self::Feedback(n) => write!(f, "feedback:{n}"),
            Self::CiFailed { sha, round } => write!(f, "ci-failed:{sha}:{round}"),
            Self::Unchanged { sha, round } => write!(f, "unchanged:{sha}:{round}"),
            Self::Updated(sha) => write!(f, "updated:{sha}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        let other = || Self::Other(s.to_owned());
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let num = || rest.parse::<u64>().ok();
        let text = || rest.to_owned();
        let sha_round = || {
            let (sha, round) = rest.rsplit_once(':')?;
            Some((sha.to_owned(), round.parse::<u32>().ok()?))
        };
        let key = match kind {
            "issue" if rest.is_empty() => Some(Self::Issue),
            "pr" if rest.is_empty() => Some(Self::PullRequest),
            "questions" => Some(Self::Questions(text())),
            "plan" => Some(Self::Plan(text())),
            "answered" => Some(Self::Answered(text())),
            "plan-approved" => num().map(Self::PlanApproved),
            "ready" => num().map(Self::Ready),
            "closed" => num().map(Self::Closed),
            "failure" => Some(Self::Failure(text())),
            "draft" => num().map(Self::Draft),
            "pushed" => Some(Self::Pushed(text())),
            "late" => num().map(Self::Late),
            "invalid" => num().map(Self::Invalid),
            "thanks" => num().map(Self::Thanks),
            "decided" => num().map(Self::Decided),
            "thumbs-up" => num().map(Self::ThumbsUp),
            "feedback" => num().map(Self::Feedback),
            "ci-failed" => sha_round().map(|(sha, round)| Self::CiFailed { sha, round }),
            "unchanged" => sha_round().map(|(sha, round)| Self::Unchanged { sha, round }),
            "updated" => Some(Self::Updated(text())),
            _ => None,
        };
        key.unwrap_or_else(other)
    }
}

/// A short, stable digest of a text for a key (FNV-1a: the same in every build, unlike
/// the standard library's hasher).
pub(crate) fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Unfinished writes remembered at most (the oldest are forgotten first).
const MAX_PENDING: usize = 32;

/// The writes of one attempt: those a previous attempt began and did not record (it
/// died meanwhile), and those this attempt began and has not finished.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    recovering: Vec<Key>,
    open: Vec<Key>,
}

impl Ledger {
    /// The ledger of an attempt that found `pending` in the record.
    pub(crate) fn recovering(pending: &[String]) -> Self {
        Self {
            recovering: pending.iter().map(|k| Key::from(k.as_str())).collect(),
            open: Vec::new(),
        }
    }

    /// Whether a previous attempt began the write `key` and died before recording it.
    pub(crate) fn was_begun(&self, key: &Key) -> bool {
        self.recovering.contains(key)
    }

    /// The write `key` is being made now.
    pub(crate) fn begin(&mut self, key: Key) {
        self.open.push(key);
    }

    /// The write `key` is done (made now, or found made by an earlier attempt).
    pub(crate) fn done(&mut self, key: &Key) {
        self.open.retain(|k| k != key);
        self.recovering.retain(|k| k != key);
    }

    /// Posts a previous attempt began, to be settled before anything relies on them.
    pub(crate) fn recovering_posts(&self) -> Vec<Key> {
        self.recovering
            .iter()
            .filter(|k| k.is_post())
            .cloned()
            .collect()
    }

    /// What the record keeps as pending: every write begun and not known to be done.
    /// A write the task moved past is never looked up again; the list stays short.
    pub(crate) fn pending(&self) -> Vec<String> {
        let mut pending: Vec<String> = Vec::new();
        for key in self.recovering.iter().chain(&self.open) {
            let key = key.to_string();
            if !pending.contains(&key) {
                pending.push(key);
            }
        }
        let excess = pending.len().saturating_sub(MAX_PENDING);
        pending.drain(..excess);
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_spelling_both_ways() {
        for s in [
            "issue",
            "pr",
            "questions:00ff",
            "plan:abcd",
            "answered:1234",
            "plan-approved:7",
            "ready:3",
            "closed:3",
            "failure:9f",
            "draft:4",
            "pushed:abc123",
            "late:11",
            "invalid:12",
            "thanks:13",
            "decided:14",
            "thumbs-up:15",
            "feedback:16",
            "ci-failed:abc123:2",
            "unchanged:abc123:1",
            "updated:def456",
        ] {
            let key = Key::from(s);
            assert!(!matches!(key, Key::Other(_)), "{s}");
            assert_eq!(key.to_string(), s);
        }
        // An unknown (or older) spelling survives as it is.
        assert_eq!(
            Key::from("ci-failed:abc123"),
            Key::Other("ci-failed:abc123".into())
        );
        assert_eq!(
            Key::from("ci-failed:abc123").to_string(),
            "ci-failed:abc123"
        );
    }

    #[test]
    fn the_ledger_forgets_the_oldest_beyond_its_bound() {
        let mut l = Ledger::default();
        for n in 0..40 {
            l.begin(Key::Late(n));
        }
        let pending = l.pending();
        assert_eq!(pending.len(), MAX_PENDING);
        assert_eq!(pending[0], "late:8");
        l.done(&Key::Late(39));
        assert!(!l.pending().contains(&"late:39".to_owned()));
    }
}
