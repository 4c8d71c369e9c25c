//! An in-memory forge that can carry out a write and then fail the call, as a
//! connection reset after GitHub acted looks, and as a crash looks to the next attempt.

use futures::future::BoxFuture;
use mainloop_forge::{
    CiStatus, Comment, CommitSummary, Cursor, Feedback, FeedbackCursor, Forge, ForgeError,
    IssueRef, MergeOutcome, NewPullRequest, PrState, PrSummary, PullRequest, RepoRef,
    Result as ForgeResult,
};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) next: u64,
    /// (number, title, body)
    pub(super) issues: Vec<(u64, String, String)>,
    /// (thread number, comment)
    pub(super) comments: Vec<(u64, Comment)>,
    /// (number, head, merged)
    pub(super) pulls: Vec<(u64, String, bool)>,
    /// Calls that do their work, then fail as if the answer never arrived.
    pub(super) lose: Vec<&'static str>,
}

#[derive(Debug, Default)]
pub(super) struct MemoryForge(pub(super) Mutex<State>);

impl MemoryForge {
    pub(super) fn lose_next(&self, call: &'static str) {
        self.0.lock().unwrap().lose.push(call);
    }

    /// Whether this call's answer is to be lost (once).
    fn lost(&self, call: &str) -> bool {
        let mut s = self.0.lock().unwrap();
        let before = s.lose.len();
        s.lose.retain(|c| *c != call);
        s.lose.len() != before
    }

    pub(super) fn comments_with(&self, needle: &str) -> usize {
        let s = self.0.lock().unwrap();
        s.comments
            .iter()
            .filter(|(_, c)| c.body.contains(needle))
            .count()
    }

    pub(super) fn answer(&self, number: u64, body: &str) {
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

pub(super) fn pr(number: u64, merged: bool) -> PullRequest {
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
    ) -> BoxFuture<'a, ForgeResult<MergeOutcome>> {
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
                    return Ok(MergeOutcome::NotMergeable("not mergeable".into()));
                }
                pr.2 = true;
            }
            if self.lost("merge_pull_request") {
                return Err(reset());
            }
            Ok(MergeOutcome::Merged)
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
