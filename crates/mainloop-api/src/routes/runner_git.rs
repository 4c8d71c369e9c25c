//! Git over smart HTTP for runners: `info/refs`, `git-upload-pack` and
//! `git-receive-pack` under `/api/runners/git/{task_id}`, served by the real `git` on
//! the task's own repository to the runner holding the task's lease, with every ref but
//! the task's branch and its base hidden and pushes held to the task's branch.
//!
//! These routes are for git clients, not JSON clients, so they are not in the OpenAPI
//! document; docs/RUNNERS.md describes them.

pub(super) mod body;
mod pkt;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::routes::runners::CurrentRunner;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use body::{BodyError, Inflow};
use mainloop_domain::TaskId;
use mainloop_engine::{RepoAccess, RunnerRow};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest one git request may take, body and answer included.
const GIT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The largest request body, as sent and once inflated.
pub const MAX_GIT_BODY: u64 = 512 * 1024 * 1024;
/// The most a request's first section (a push's ref updates, a fetch's wants) may take
/// before its flush; real ones are a few KiB.
const MAX_FIRST_SECTION: usize = 1024 * 1024;
/// How much of git's standard error is kept for the log.
const MAX_STDERR: usize = 16 * 1024;
const REALM: &str = "Basic realm=\"mainloop runners\"";

/// The two git services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    const fn name(self) -> &'static str {
        match self {
            Self::UploadPack => "upload-pack",
            Self::ReceivePack => "receive-pack",
        }
    }

    fn from_query(service: &str) -> Option<Self> {
        match service {
            "git-upload-pack" => Some(Self::UploadPack),
            "git-receive-pack" => Some(Self::ReceivePack),
            _ => None,
        }
    }
}

/// A 401 that git's credential helpers answer: they send Basic auth only when asked.
fn challenge(err: ApiError) -> Response {
    let mut response = err.into_response();
    if response.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    }
    response
}

/// The runner token of a git request: `Authorization: Bearer <token>`, or Basic auth
/// with any user name and the token as the password (what credential helpers send).
#[derive(Debug)]
pub struct GitRunner(pub RunnerRow);

impl FromRequestParts<AppState> for GitRunner {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(basic) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(basic_password)
        else {
            // Bearer (or nothing): the runners' one extractor decides.
            return CurrentRunner::from_request_parts(parts, state)
                .await
                .map(|CurrentRunner(r)| Self(r))
                .map_err(challenge);
        };
        let runner = state
            .engine
            .authenticate_runner(&basic)
            .await
            .map_err(|e| challenge(e.into()))?
            .ok_or_else(|| challenge(ApiError::unauthorized("unknown or revoked runner token")))?;
        Ok(Self(runner))
    }
}

/// The password of `Authorization: Basic base64(user:password)`.
fn basic_password(value: &HeaderValue) -> Option<String> {
    let (scheme, encoded) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// `?service=git-upload-pack|git-receive-pack`.
#[derive(Debug, Deserialize, Serialize)]
pub struct InfoRefsQuery {
    pub service: Option<String>,
}

async fn access(state: &AppState, runner: &RunnerRow, task: TaskId) -> ApiResult<RepoAccess> {
    Ok(state.engine.runner_repo_access(runner.id, task).await?)
}

/// `-c` settings that leave only the task's branch and its base visible to `service`,
/// and no object fetchable but what those reach.
fn scope(service: Service, access: &RepoAccess) -> Vec<String> {
    let key = match service {
        Service::UploadPack => "uploadpack.hideRefs",
        Service::ReceivePack => "receive.hideRefs",
    };
    // Later entries win, and command-line settings come after the repository's own, so
    // these decide whatever the repository configures. HEAD is not under refs/: it is
    // hidden by name, or it would show the checked-out branch's commit.
    let mut config = vec![format!("{key}=refs/"), format!("{key}=HEAD")];
    for branch in access.base_branch.iter().chain([&access.branch]) {
        config.push(format!("{key}=!refs/heads/{branch}"));
    }
    config.push(format!("{key}=!{}", access.snapshot_ref));
    match service {
        Service::UploadPack => config.extend(
            [
                "uploadpack.allowAnySHA1InWant=false",
                "uploadpack.allowReachableSHA1InWant=false",
                "uploadpack.allowTipSHA1InWant=false",
                "uploadpack.allowFilter=false",
            ]
            .map(str::to_owned),
        ),
        // What a runner pushes is checked as well-formed before any ref moves.
        // The repository's own hooks are its user's, for their pushes, not a runner's.
        Service::ReceivePack => config
            .extend(["receive.fsckObjects=true", "core.hooksPath=/dev/null"].map(str::to_owned)),
    }
    config
}

fn git(service: Service, access: &RepoAccess, advertise: bool) -> Command {
    let mut cmd = Command::new("git");
    for setting in scope(service, access) {
        cmd.arg("-c").arg(setting);
    }
    cmd.arg(service.name()).arg("--stateless-rpc");
    if advertise {
        cmd.arg("--advertise-refs");
    }
    cmd.arg("--").arg(&access.repo_path);
    // The repository is the path above and nothing the server's environment says;
    // without GIT_PROTOCOL git speaks protocol v0, whose requests are checked here.
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_NAMESPACE", "GIT_PROTOCOL"] {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true);
    cmd
}

fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
}

fn content_type(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(header::CONTENT_TYPE, v);
    }
}

/// The refs advertisement that starts a fetch or a push.
pub async fn info_refs(
    GitRunner(runner): GitRunner,
    State(state): State<AppState>,
    ApiPath(task): ApiPath<TaskId>,
    ApiQuery(q): ApiQuery<InfoRefsQuery>,
) -> Result<Response, Response> {
    let service = q
        .service
        .as_deref()
        .and_then(Service::from_query)
        .ok_or_else(|| {
            ApiError::bad_request(
                "this server speaks smart HTTP only: \
                 `?service=git-upload-pack` or `?service=git-receive-pack`",
            )
            .into_response()
        })?;
    let access = access(&state, &runner, task)
        .await
        .map_err(IntoResponse::into_response)?;
    let mut cmd = git(service, &access, true);
    cmd.stdin(Stdio::null());
    let out = match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => out,
        Ok(Ok(out)) => {
            let detail = format!(
                "git {} --advertise-refs on task {task}: {}: {}",
                service.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return Err(ApiError::internal(&detail).into_response());
        }
        Ok(Err(e)) => return Err(ApiError::internal(&format!("running git: {e}")).into_response()),
        Err(_) => {
            return Err(ApiError::internal(&"git took too long to advertise refs").into_response());
        }
    };
    let announce = format!("# service=git-{}\n", service.name());
    let mut body = format!("{:04x}{announce}0000", announce.len() + 4).into_bytes();
    body.extend_from_slice(&out.stdout);
    let mut response = Body::from(body).into_response();
    content_type(
        response.headers_mut(),
        &format!("application/x-git-{}-advertisement", service.name()),
    );
    no_cache(response.headers_mut());
    Ok(response)
}

/// A fetch's negotiation and pack.
pub async fn upload_pack(
    GitRunner(runner): GitRunner,
    State(state): State<AppState>,
    ApiPath(task): ApiPath<TaskId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    rpc(Service::UploadPack, &state, &runner, task, &headers, body)
        .await
        .map_err(IntoResponse::into_response)
}

/// A push: its ref updates are checked (the task's branch and snapshot ref only, no
/// deletions) before git sees any of it.
pub async fn receive_pack(
    GitRunner(runner): GitRunner,
    State(state): State<AppState>,
    ApiPath(task): ApiPath<TaskId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    rpc(Service::ReceivePack, &state, &runner, task, &headers, body)
        .await
        .map_err(IntoResponse::into_response)
}

fn body_error(e: &BodyError) -> ApiError {
    match e {
        BodyError::TooLarge(_) => ApiError::too_large(e.to_string()),
        BodyError::BadGzip(_) | BodyError::Read(_) => ApiError::bad_request(e.to_string()),
    }
}

/// Whether the body is gzip, refusing encodings git never sends.
fn gzipped(headers: &HeaderMap) -> ApiResult<bool> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    match value.to_str().map(|v| v.trim().to_ascii_lowercase()) {
        Ok(v) if v == "gzip" || v == "x-gzip" => Ok(true),
        Ok(v) if v.is_empty() || v == "identity" => Ok(false),
        _ => Err(ApiError::bad_request(
            "unsupported Content-Encoding: send gzip or none",
        )),
    }
}

async fn rpc(
    service: Service,
    state: &AppState,
    runner: &RunnerRow,
    task: TaskId,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let access = access(state, runner, task).await?;
    let deadline = Instant::now() + GIT_TIMEOUT;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_GIT_BODY) {
        return Err(body_error(&BodyError::TooLarge(MAX_GIT_BODY)));
    }
    let mut inflow = Inflow::new(body, gzipped(headers)?, MAX_GIT_BODY);
    let head = tokio::time::timeout_at(deadline, first_section(service, &access, &mut inflow))
        .await
        .map_err(|_| ApiError::bad_request("the request body did not arrive in time"))??;

    let mut child = git(service, &access, false)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApiError::internal(&format!("running git: {e}")))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ApiError::internal(&"git's pipes were not opened"));
    };
    let refused = CancellationToken::new();
    tokio::spawn(feed(stdin, head, inflow, deadline, refused.clone()));
    let stderr = tokio::spawn(read_capped(stderr));
    let out = Output {
        service,
        task,
        child,
        stdout,
        stderr: Some(stderr),
        refused,
        deadline,
        done: false,
    };
    let mut response =
        Body::from_stream(futures::stream::unfold(out, Output::next)).into_response();
    content_type(
        response.headers_mut(),
        &format!("application/x-git-{}-result", service.name()),
    );
    no_cache(response.headers_mut());
    Ok(response)
}

/// Reads the body up to its first flush and checks it: well-formed pkt-lines, and for
/// a push only updates of the task's branch. Returns what was read, for git.
async fn first_section(
    service: Service,
    access: &RepoAccess,
    inflow: &mut Inflow,
) -> ApiResult<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let parsed = match service {
            Service::UploadPack => pkt::first_section(&head).map(|s| s.map(|_| ())),
            Service::ReceivePack => match pkt::ref_updates(&head) {
                Ok(Some(section)) => {
                    pkt::check_updates(
                        &section.lines,
                        &[
                            &format!("refs/heads/{}", access.branch),
                            &access.snapshot_ref,
                        ],
                    )
                    .map_err(ApiError::forbidden)?;
                    Ok(Some(()))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
        };
        match parsed {
            Ok(Some(())) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(ApiError::bad_request(format!("not a git request: {e}"))),
        }
        if head.len() > MAX_FIRST_SECTION {
            return Err(ApiError::too_large(format!(
                "the request's first section is longer than {MAX_FIRST_SECTION} bytes"
            )));
        }
        match inflow.next().await.map_err(|e| body_error(&e))? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => {
                let e = pkt::PktError::Truncated;
                return Err(ApiError::bad_request(format!("not a git request: {e}")));
            }
        }
    }
}

/// Writes the checked first section, then the rest of the body, to git. A body that
/// turns out too large or malformed past the first section ends the request through
/// `refused`, so git never acts on part of it.
async fn feed(
    mut stdin: tokio::process::ChildStdin,
    head: Vec<u8>,
    mut inflow: Inflow,
    deadline: Instant,
    refused: CancellationToken,
) {
    let copy = async {
        if stdin.write_all(&head).await.is_err() {
            return Ok(());
        }
        while let Some(chunk) = inflow.next().await? {
            // Git stopped reading: it has answered, or failed, and says which on stdout.
            if stdin.write_all(&chunk).await.is_err() {
                return Ok(());
            }
        }
        Ok::<(), BodyError>(())
    };
    match tokio::time::timeout_at(deadline, copy).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::info!(error = %e, "a runner's git request body was refused midway");
            refused.cancel();
        }
        Err(_) => refused.cancel(),
    }
    // Dropping stdin closes it: git sees the end of the request.
}

async fn read_capped(mut stderr: tokio::process::ChildStderr) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_STDERR.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// Git's answer, streamed as it comes. Dropped early (the client left), it kills git.
struct Output {
    service: Service,
    task: TaskId,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
    refused: CancellationToken,
    deadline: Instant,
    done: bool,
}

impl Output {
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Self)> {
        if self.done {
            return None;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let read = tokio::select! {
            () = self.refused.cancelled() => Err("the request body was refused midway".to_owned()),
            r = tokio::time::timeout_at(self.deadline, self.stdout.read(&mut buf)) => match r {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(format!("reading git's output: {e}")),
                Err(_) => Err(format!("git took longer than {} s", GIT_TIMEOUT.as_secs())),
            },
        };
        let failure = match read {
            Ok(0) => self.finish().await,
            Ok(n) => {
                buf.truncate(n);
                return Some((Ok(Bytes::from(buf)), self));
            }
            Err(why) => {
                let _ = self.child.start_kill();
                Some(why)
            }
        }?;
        self.done = true;
        // An error ends the response without its last chunk, so git on the other end
        // reports a failed request instead of reading a truncated answer as whole.
        Some((Err(std::io::Error::other(failure)), self))
    }

    /// At the end of git's output: `None` when git succeeded, else what went wrong.
    async fn finish(&mut self) -> Option<String> {
        self.done = true;
        let status = tokio::time::timeout_at(self.deadline, self.child.wait()).await;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let failure = match status {
            Ok(Ok(s)) if s.success() && !self.refused.is_cancelled() => return None,
            Ok(Ok(s)) if s.success() => "the request body was refused midway".to_owned(),
            Ok(Ok(s)) => format!("git {} {s}", self.service.name()),
            Ok(Err(e)) => format!("waiting for git: {e}"),
            Err(_) => {
                let _ = self.child.start_kill();
                format!("git took longer than {} s", GIT_TIMEOUT.as_secs())
            }
        };
        tracing::warn!(
            task = %self.task,
            service = self.service.name(),
            stderr = %String::from_utf8_lossy(&stderr).trim(),
            "a runner's git request failed: {failure}"
        );
        Some(failure)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_carries_the_token_as_the_password() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let header = |s: String| HeaderValue::from_str(&s).unwrap();
        assert_eq!(
            basic_password(&header(format!("Basic {}", b64("x-token:mlr_abc")))).as_deref(),
            Some("mlr_abc")
        );
        assert_eq!(
            basic_password(&header(format!("basic {}", b64(":mlr_a:b")))).as_deref(),
            Some("mlr_a:b"),
            "any user name, even none; the password may hold colons"
        );
        for bad in [
            format!("Basic {}", b64("user:")),
            format!("Basic {}", b64("no-colon")),
            "Basic !!!".to_owned(),
            format!("Bearer {}", b64("u:mlr_abc")),
        ] {
            assert_eq!(basic_password(&header(bad.clone())), None, "{bad}");
        }
    }

    #[test]
    fn only_the_task_branch_and_its_base_are_left_visible() {
        let access = RepoAccess {
            repo_path: "/repo".into(),
            branch: "mainloop/abc-task".into(),
            base_branch: Some("main".into()),
            snapshot_ref: "refs/mainloop/snapshots/t".into(),
        };
        let up = scope(Service::UploadPack, &access);
        assert_eq!(
            &up[..5],
            [
                "uploadpack.hideRefs=refs/",
                "uploadpack.hideRefs=HEAD",
                "uploadpack.hideRefs=!refs/heads/main",
                "uploadpack.hideRefs=!refs/heads/mainloop/abc-task",
                "uploadpack.hideRefs=!refs/mainloop/snapshots/t",
            ]
        );
        assert!(up.contains(&"uploadpack.allowAnySHA1InWant=false".to_owned()));
        let down = scope(Service::ReceivePack, &access);
        assert!(down.iter().all(|s| !s.starts_with("uploadpack.")));
        assert!(down.contains(&"receive.hideRefs=!refs/heads/mainloop/abc-task".to_owned()));
        assert!(down.contains(&"core.hooksPath=/dev/null".to_owned()));
    }

    #[test]
    fn encodings_other_than_gzip_are_refused() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(v));
            h
        };
        assert!(!gzipped(&HeaderMap::new()).unwrap());
        assert!(gzipped(&with("gzip")).unwrap());
        assert!(gzipped(&with("x-gzip")).unwrap());
        assert!(!gzipped(&with("identity")).unwrap());
        assert!(gzipped(&with("br")).is_err());
    }
}
