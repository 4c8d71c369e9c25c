//! Infrastructure faults under the running server: probes that record what each API
//! request got back, a live event follower, the server's log, and the scripts and
//! checks the fault tests share. Each test counts what it injects.

use super::*;

/// What one API request made during a fault got back.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) what: &'static str,
    /// 0: no answer within [`PROBE_BOUND`] (a hang), or the connection failed.
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) elapsed: Duration,
}

/// The longest an API request may take while the database is away: the pool's acquire
/// timeout (10 s) plus slack for a loaded machine. Beyond it a request counts as hung.
pub(crate) const PROBE_BOUND: Duration = Duration::from_secs(14);

pub(crate) async fn probe(
    what: &'static str,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Probe {
    probe_within(PROBE_BOUND, what, method, url, token, body).await
}

/// [`probe`] with another bound on the answer's time.
pub(crate) async fn probe_within(
    bound: Duration,
    what: &'static str,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Probe {
    let started = std::time::Instant::now();
    let mut rb = reqwest::Client::builder()
        .timeout(bound)
        .build()
        .unwrap()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let (status, v) = match rb.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(e) => (
            0,
            json!({"error": {"code": "transport", "message": e.to_string()}}),
        ),
    };
    Probe {
        what,
        status,
        code: v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        message: v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        elapsed: started.elapsed(),
    }
}

/// Every probe either worked or was refused with a clear 503 (`unavailable`, with a
/// message) in bounded time: never a 500, never a hang.
pub(crate) fn assert_refused_cleanly(probes: &[Probe]) {
    for p in probes {
        let ok = (200..300).contains(&p.status);
        let unavailable = p.status == 503 && p.code == "unavailable" && !p.message.is_empty();
        assert!(ok || unavailable, "{} answered {p:?}", p.what);
        assert!(p.elapsed < PROBE_BOUND, "{} took {:?}", p.what, p.elapsed);
    }
}

/// A client of `/api/events` that behaves like the web app: when the stream ends it
/// reconnects with `Last-Event-ID`, and it records every event id it is given.
pub(crate) struct EventFollower {
    pub(crate) ids: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    pub(crate) reconnects: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl EventFollower {
    pub(crate) fn start(base: &str, token: &str) -> Self {
        use futures::StreamExt as _;
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reconnects = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (base, token) = (base.to_owned(), token.to_owned());
        let (seen, again) = (ids.clone(), reconnects.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let last = seen.lock().unwrap().last().copied().unwrap_or(0);
                let response = http
                    .get(format!("{base}/api/events"))
                    .bearer_auth(&token)
                    .header("last-event-id", last.to_string())
                    .send()
                    .await;
                if let Ok(r) = response.and_then(reqwest::Response::error_for_status) {
                    let mut stream = r.bytes_stream();
                    let mut buf = String::new();
                    while let Some(Ok(chunk)) = stream.next().await {
                        buf.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = buf.find("\n\n") {
                            let block: String = buf.drain(..end + 2).collect();
                            if let Some(id) = block
                                .lines()
                                .find_map(|l| l.strip_prefix("id:"))
                                .and_then(|v| v.trim().parse::<i64>().ok())
                            {
                                seen.lock().unwrap().push(id);
                            }
                        }
                    }
                }
                again.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            ids,
            reconnects,
            task,
        }
    }

    pub(crate) fn ids(&self) -> Vec<i64> {
        self.ids.lock().unwrap().clone()
    }

    /// Waits until the follower has seen event `id` (or later).
    pub(crate) async fn wait_for(&self, id: i64) {
        wait_for(
            format!("the event follower to reach event {id}"),
            || async { self.ids().last().is_some_and(|l| *l >= id).then_some(()) },
        )
        .await;
    }
}

impl Drop for EventFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every event id of the user's log, read back from the start.
pub(crate) async fn all_event_ids(base: &str, token: &str) -> Vec<i64> {
    all_events(base, token)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

pub(crate) fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

pub(crate) fn strictly_increasing(ids: &[i64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// Starts a server whose log (warnings and errors) goes to `server.log` beside `data`
/// instead of the test's output: fault tests make it long. Returns the log's path.
pub(crate) fn spawn_logged(cmd: Command, data: &Path) -> (Server, ServerLog) {
    let path = data.with_extension("log");
    let log = std::fs::File::create(&path).unwrap();
    (
        Server::spawn_logging_to(cmd, Stdio::from(log)),
        ServerLog(path),
    )
}

/// The server's log file; a test that fails prints its end, so a failure seen only on
/// a loaded CI machine still says what the server was doing.
pub(crate) struct ServerLog(std::path::PathBuf);

impl std::ops::Deref for ServerLog {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ServerLog {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ServerLog {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        eprintln!(
            "--- the server log's last {} lines ---\n{}",
            tail.len(),
            tail.join("\n")
        );
    }
}

/// How many lines of the server's log contain `needle`.
pub(crate) fn log_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until the server's log has a line containing `needle`.
pub(crate) async fn wait_log(path: &Path, needle: &str) {
    wait_for(format!("the log to say {needle:?}"), || async {
        (log_lines(path, needle) > 0).then_some(())
    })
    .await;
}

/// The server process is still running (it did not exit on the fault).
pub(crate) fn assert_running(server: &mut Server) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
}

/// A server on PostgreSQL (`database_url`), with the real claude CLI as its worker
/// agent when there is one.
pub(crate) fn postgres_command(
    data: &Path,
    fake: &FakeAnthropic,
    database_url: &str,
    claude: Option<&Path>,
) -> Command {
    let mut cmd = command(data, Some(&fake.base_url()));
    cmd.env("DATABASE_URL", database_url)
        // Short leases: an attempt whose end could not be recorded while the database
        // was away is handed out again within seconds, not a minute.
        .env("MAINLOOP_DISPATCHER__LEASE_SECS", "3")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    if let Some(claude) = claude {
        cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude);
    }
    cmd
}

pub(crate) fn git_repo() -> GitRepo {
    GitRepo::new()
}

pub(crate) const STEADY: &str = r##"
rules:
  # The worker's rules come first and need its Bash tool: the CLI may prepend a
  # reminder to the task's message that speaks of "the user's questions", which the
  # chat's rules below would otherwise answer (and the agent would write nothing).
  - name: task-work
    match: {user_contains: "Task: steady work", tool_offered: Bash}
    delay_ms: 150
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'steady\\n' > steady.txt", description: "Work"}}
  # Resumed after a crash or a retry, the agent still does the work (a run that leaves
  # no change fails).
  - name: task-work-resumed
    match: {user_contains: "Continue the task where you left off", tool_offered: Bash}
    delay_ms: 150
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'steady\\n' > steady.txt", description: "Work"}}
  - name: task-done
    match: {tool_result_for: Bash}
    delay_ms: 150
    reply: [{text: "Done with the steady work."}]
  - name: probe
    match: {user_contains: "probe question"}
    reply: [{text: "A quick answer."}]
  - name: chat
    match: {user_contains: "question"}
    delay_ms: 120
    reply: [{text: "An answer in pieces: one, two, three, four, five, six, seven."}]
"##;

/// Posts a chat message; returns its id when it was stored (202), else the probe.
pub(crate) async fn try_chat(base: &str, token: &str, text: &str) -> Result<String, Probe> {
    let started = std::time::Instant::now();
    let r = client()
        .post(format!("{base}/api/chat"))
        .bearer_auth(token)
        .json(&json!({ "text": text }))
        .send()
        .await;
    match r {
        Ok(r) if r.status() == 202 => {
            let v: Value = r.json().await.unwrap();
            Ok(v["message_id"].as_str().unwrap().to_owned())
        }
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            Err(Probe {
                what: "POST /api/chat",
                status,
                code: v["error"]["code"].as_str().unwrap_or_default().to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                elapsed: started.elapsed(),
            })
        }
        Err(e) => Err(Probe {
            what: "POST /api/chat",
            status: 0,
            code: "transport".into(),
            message: e.to_string(),
            elapsed: started.elapsed(),
        }),
    }
}

/// Requests a user makes while something is wrong: reads and writes, one round.
pub(crate) async fn probe_round(base: &str, token: &str, n: usize) -> Vec<Probe> {
    let get = |what, path: &str| {
        probe(
            what,
            reqwest::Method::GET,
            format!("{base}{path}"),
            token,
            None,
        )
    };
    let (a, b, c, d) = tokio::join!(
        get("GET /api/tasks", "/api/tasks"),
        get("GET /api/chat/messages", "/api/chat/messages?limit=5"),
        get("GET /api/health", "/api/health"),
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            format!("{base}/api/chat"),
            token,
            Some(json!({ "text": format!("probe question {n}") })),
        ),
    );
    vec![a, b, c, d]
}

/// Chat answers slowly (a turn is in flight when the database freezes); [`frozen`] adds
/// the greeter, whose task asks two questions, then plans.
pub(crate) const FROZEN: &str = r##"
rules:
  - name: probe
    match: {user_contains: "probe question"}
    reply: [{text: "A quick answer."}]
  - name: chat
    match: {user_contains: "chat question"}
    delay_ms: 250
    reply: [{text: "An answer in pieces: one, two, three, four, five, six, seven."}]
"##;

/// [`FROZEN`]'s chat, then the greeter for the task.
pub(crate) fn frozen() -> Script {
    Script::from_yaml(FROZEN).unwrap().then(script("greeter"))
}

/// Rows that would mean a write was cut in half. Each count must stay 0.
pub(crate) const HALF_WRITTEN: &[(&str, &str)] = &[
    (
        "a user message without its chat.turn job",
        "SELECT count(*) FROM messages m WHERE m.role = 'user' AND m.kind = 'text' \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.key = 'chat:' || m.id)",
    ),
    (
        "a user message without its chat.message event",
        "SELECT count(*) FROM messages m WHERE m.role = 'user' AND m.kind = 'text' \
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.name = 'chat.message' \
         AND e.payload LIKE '%' || m.id || '%')",
    ),
    (
        "a task without its 'Task created' update",
        "SELECT count(*) FROM tasks t \
         WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.task_id = t.id)",
    ),
    (
        "a task waiting for answers without an open inbox item",
        "SELECT count(*) FROM tasks t WHERE t.state = 'waiting_answers' AND NOT EXISTS \
         (SELECT 1 FROM inbox_items i WHERE i.task_id = t.id AND i.resolved_at IS NULL)",
    ),
];

pub(crate) async fn assert_nothing_half_written(url: &str) {
    for (what, sql) in HALF_WRITTEN {
        assert_eq!(
            mainloop_testpg::query_i64(url, sql).await.unwrap(),
            0,
            "{what}"
        );
    }
}

pub(crate) async fn count(url: &str, sql: &str) -> i64 {
    mainloop_testpg::query_i64(url, sql).await.unwrap()
}

/// Sends `request` until it is accepted (within 10 s), as a user pressing "retry" on a
/// 503 would; every refusal on the way must be a clean 503. Returns the accepted probe
/// and how many refusals it met.
pub(crate) async fn until_accepted<F, Fut>(mut request: F) -> (Probe, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Probe>,
{
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let accepted = wait_for_within(
        Duration::from_secs(10),
        "the request to be accepted",
        || {
            let answer = request();
            let refused = &refused;
            async move {
                let p = answer.await;
                if (200..300).contains(&p.status) {
                    return Some(p);
                }
                assert_refused_cleanly(std::slice::from_ref(&p));
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
        },
    )
    .await;
    (accepted, refused.into_inner())
}

/// Every event of the user's log, read back from the start: (id, name, payload).
pub(crate) async fn all_events(base: &str, token: &str) -> Vec<(i64, String, Value)> {
    use futures::StreamExt as _;
    let r = client()
        .get(format!("{base}/api/events?after=0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    // The replay comes first and at once; a quiet half second means it is over.
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(500), stream.next()).await
    {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(id), Some(name), Some(data)) =
                (field("id:"), field("event:"), field("data:"))
            {
                events.push((
                    id.parse().unwrap(),
                    name,
                    serde_json::from_str(&data).unwrap(),
                ));
            }
        }
    }
    events
}
