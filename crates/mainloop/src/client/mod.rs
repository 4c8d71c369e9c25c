//! The command-line client: commands that talk to a mainloop server, local or remote,
//! through its public HTTP API only (`/api/...`), with human-readable output or the
//! API's JSON (`--json`), and exit codes scripts can rely on (`docs/CLI.md`).

mod agents;
mod answer;
mod budget;
mod chat;
mod config;
mod decide;
mod digests;
mod http;
mod ids;
mod login;
mod render;
mod runners;
mod search;
mod sse;
mod tasks;
mod usage;
mod usage_render;
mod views;

pub use http::ClientError;

use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::Write;

/// Where to connect, and how to print. Every client command takes these.
#[derive(Debug, Args)]
pub struct Conn {
    /// The server's URL (default: the one `mainloop login` stored).
    #[arg(long, global = true, env = "MAINLOOP_SERVER", value_name = "URL")]
    server: Option<String>,
    /// An API token (default: the stored login's, when talking to its server).
    #[arg(
        long,
        global = true,
        env = "MAINLOOP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the API's JSON (one document) instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// The commands that talk to a server.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Sign in to a server: check the token and store it with the URL.
    Login {
        /// The server, e.g. http://127.0.0.1:8080.
        url: String,
        /// The API token (`mainloop token` on the server prints it); asked for when
        /// not given, without echo on a terminal.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Forget the stored login.
    Logout,
    /// Talk to the main thread: send TEXT and stream the reply, or with no TEXT, an
    /// interactive session (Ctrl-D ends it).
    Chat {
        #[command(flatten)]
        conn: Conn,
        /// The message (words are joined with spaces).
        text: Vec<String>,
    },
    /// List tasks, newest first.
    Tasks {
        #[command(flatten)]
        conn: Conn,
        /// Only tasks in this state (repeatable): queued, planning, waiting_answers,
        /// waiting_plan_review, implementing, on_hold, checking, review, merged, failed,
        /// cancelled.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show a task and its transcript.
    Task {
        #[command(flatten)]
        conn: Conn,
        /// The task: its id, a unique start of it, or its short id from `mainloop tasks`.
        id: String,
        /// Stream new transcript entries until the task ends (or Ctrl-C).
        #[arg(long, short)]
        follow: bool,
    },
    /// Search everything: the conversation, tasks, questions and answers, plans,
    /// transcripts, reviews, notes and digests. Every word must occur.
    Search {
        #[command(flatten)]
        conn: Conn,
        /// The words to find (joined with spaces); the last may be the start of a word.
        #[arg(required = true, value_name = "QUERY")]
        query: Vec<String>,
        /// Only hits of this kind (repeatable): message, task, question, plan,
        /// transcript, review, note, digest.
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only hits of this task (its id, or a unique start of it).
        #[arg(long, value_name = "ID")]
        task: Option<String>,
        /// Only hits from this day on (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Only hits up to this day, included (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// At most this many hits (1–100; default 20).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// What happened each day, week and month, newest first: what was asked, spawned,
    /// decided, merged, failed and left open.
    Digests {
        #[command(flatten)]
        conn: Conn,
        /// Only digests of this length: day, week or month.
        #[arg(long, value_name = "PERIOD")]
        period: Option<String>,
        /// Only digests that start before this day (YYYY-MM-DD), to read further back.
        #[arg(long, value_name = "DATE")]
        before: Option<String>,
        /// At most this many (1–200; default 30).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show one digest.
    Digest {
        #[command(flatten)]
        conn: Conn,
        /// The digest's id, as `mainloop digests` shows it.
        id: String,
    },
    /// Show the time zone whose midnights end your days (and so your digests), or set it.
    TimeZone {
        #[command(flatten)]
        conn: Conn,
        /// An IANA name, such as Europe/Paris or UTC.
        #[arg(value_name = "ZONE", conflicts_with = "default")]
        zone: Option<String>,
        /// Go back to the server's default.
        #[arg(long)]
        default: bool,
    },
    /// What needs you: questions, plans and work to review, failures.
    Inbox {
        #[command(flatten)]
        conn: Conn,
    },
    /// Answer a task's questions, one by one (options numbered; "1,3" picks several).
    Answer {
        #[command(flatten)]
        conn: Conn,
        /// The task.
        id: String,
    },
    /// Decide on a task's plan.
    Plan {
        #[command(flatten)]
        conn: Conn,
        /// The task.
        id: String,
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Decide on a task's finished work.
    Review {
        #[command(flatten)]
        conn: Conn,
        /// The task.
        id: String,
        #[command(subcommand)]
        action: ReviewAction,
    },
    /// Cancel a task.
    Cancel {
        #[command(flatten)]
        conn: Conn,
        /// The task.
        id: String,
    },
    /// Retry a failed task where it stopped.
    Retry {
        #[command(flatten)]
        conn: Conn,
        /// The task.
        id: String,
    },
    /// Start a task without the chat.
    New {
        #[command(flatten)]
        conn: Conn,
        /// The repository: a path on the server's machine, a git URL or owner/name.
        #[arg(long, value_name = "REPO")]
        repo: String,
        /// Go straight to implementation, without a plan to review.
        #[arg(long)]
        skip_plan: bool,
        /// The coding agent to run (`mainloop agents` lists them); default: the
        /// project's, else the server's.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        /// A label the machine that runs the task must carry (repeatable), as a runner
        /// offers it with `--label L`; the project's `runner_labels` are added.
        #[arg(long = "label", value_name = "L")]
        labels: Vec<String>,
        /// What the worker should do (words are joined with spaces).
        #[arg(required = true, value_name = "DESCRIPTION")]
        description: Vec<String>,
    },
    /// The coding agents the server can run: protocol, installed or not, the default.
    Agents {
        #[command(flatten)]
        conn: Conn,
    },
    /// What has been spent: per day as a chart, per agent and per task; today and this
    /// week against their budgets; the agents' quota windows.
    Usage {
        #[command(flatten)]
        conn: Conn,
        /// Days to show, ending today (UTC); default 30.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=366))]
        days: Option<u32>,
    },
    /// Pause all work: no agent starts; running ones stop at the end of their turn.
    Pause {
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume all work: every paused task goes on.
    Resume {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show or change the spending caps; answer a task on hold at one.
    Budget {
        #[command(flatten)]
        conn: Conn,
        /// What to do (default: show).
        #[command(subcommand)]
        action: Option<BudgetAction>,
    },
    /// Manage runner tokens: each lets one `mainloop runner` on another machine connect.
    RunnerToken {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: runners::Action,
    },
    /// Serve mainloop's MCP tools on stdin/stdout, for clients that only speak stdio.
    Mcp {
        #[command(flatten)]
        conn: Conn,
    },
}

/// What to do with a plan.
#[derive(Debug, Subcommand)]
pub enum PlanAction {
    /// Approve it: the worker implements it.
    Approve,
    /// Send it back with what to change.
    Revise {
        #[arg(required = true, value_name = "TEXT")]
        feedback: Vec<String>,
    },
    /// Cancel the task.
    Cancel,
}

/// What to do with finished work.
#[derive(Debug, Subcommand)]
pub enum ReviewAction {
    /// Approve it: the work is merged.
    Approve,
    /// Ask for changes.
    Changes {
        #[arg(required = true, value_name = "TEXT")]
        feedback: Vec<String>,
    },
}

/// What to do with budgets.
#[derive(Debug, Subcommand)]
pub enum BudgetAction {
    /// Show the caps.
    Show,
    /// Change the caps named (the others stay): `--daily 5 --clear task`; with
    /// `--agent NAME`, that agent's daily and weekly caps.
    Set(budget::Change),
    /// Raise the budget a task on hold reached to USD: it goes on, and so does every task
    /// that budget held.
    Raise {
        /// The task.
        id: String,
        /// The new cap, in US dollars: more than what was spent.
        #[arg(value_parser = budget::amount, allow_negative_numbers = true)]
        usd: f64,
    },
    /// Let a task on hold at a budget run once past it (checked again at its next run).
    Continue {
        /// The task.
        id: String,
    },
}

/// A connected command's context: the API and the output mode.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub api: http::Api,
    pub json: bool,
}

impl Ctx {
    fn connect(conn: &Conn) -> Result<Self, ClientError> {
        let stored = match (&conn.server, &conn.token) {
            // Both given: the stored login is not needed (nor its file readable).
            (Some(_), Some(_)) => None,
            // A server given without a token may still work (authentication off).
            (Some(_), None) => match config::login_path() {
                Ok(path) => config::load(&path)?,
                Err(_) => None,
            },
            (None, _) => config::load(&config::login_path()?)?,
        };
        let c = config::resolve(
            conn.server.as_deref(),
            conn.token.as_deref(),
            stored.as_ref(),
        )?;
        Ok(Self {
            api: http::Api::new(&c.url, c.token.as_deref())?,
            json: conn.json,
        })
    }

    /// Prints the API's JSON (with `--json`) or the text `human` makes of it.
    pub fn show(&self, value: &Value, human: impl FnOnce() -> String) -> Result<(), ClientError> {
        if self.json {
            print_json(value)
        } else {
            print(&human())
        }
    }
}

/// Writes `text` to standard output as it is.
pub(crate) fn print(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| ClientError::local("writing to standard output", e))
}

/// Writes one JSON document to standard output, on its own line.
pub(crate) fn print_json(value: &Value) -> Result<(), ClientError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ClientError::local("encoding JSON", e))?;
    print(&format!("{text}\n"))
}

/// Words given as several arguments, as one text.
fn joined(words: &[String]) -> String {
    words.join(" ")
}

/// Runs one client command.
///
/// # Errors
/// A [`ClientError`]; its [`ClientError::exit_code`] is the process's exit code.
pub async fn run(command: ClientCommand) -> Result<(), ClientError> {
    use ClientCommand as C;
    match command {
        C::Login { url, token } => login::login(&url, token).await,
        C::Logout => login::logout(),
        C::Chat { conn, text } => {
            let ctx = Ctx::connect(&conn)?;
            if text.is_empty() {
                chat::interactive(&ctx).await
            } else {
                chat::once(&ctx, &joined(&text)).await
            }
        }
        C::Tasks {
            conn,
            states,
            limit,
        } => tasks::list(&Ctx::connect(&conn)?, &states, limit).await,
        C::Task { conn, id, follow } => tasks::show(&Ctx::connect(&conn)?, &id, follow).await,
        C::Search {
            conn,
            query,
            kinds,
            task,
            from,
            to,
            limit,
        } => {
            let filters = search::Filters {
                kinds: &kinds,
                task: task.as_deref(),
                from: from.as_deref(),
                to: to.as_deref(),
                limit,
            };
            search::search(&Ctx::connect(&conn)?, &joined(&query), &filters).await
        }
        C::Digests {
            conn,
            period,
            before,
            limit,
        } => {
            let filters = digests::Filters {
                period: period.as_deref(),
                before: before.as_deref(),
                limit,
            };
            digests::list(&Ctx::connect(&conn)?, &filters).await
        }
        C::Digest { conn, id } => digests::show(&Ctx::connect(&conn)?, &id).await,
        C::TimeZone {
            conn,
            zone,
            default,
        } => digests::time_zone(&Ctx::connect(&conn)?, zone.as_deref(), default).await,
        C::Inbox { conn } => tasks::inbox(&Ctx::connect(&conn)?).await,
        C::New {
            conn,
            repo,
            skip_plan,
            agent,
            labels,
            description,
        } => {
            tasks::create(
                &Ctx::connect(&conn)?,
                &repo,
                skip_plan,
                agent.as_deref(),
                &labels,
                &joined(&description),
            )
            .await
        }
        C::Agents { conn } => agents::list(&Ctx::connect(&conn)?).await,
        C::Answer { conn, id } => decide::answer(&Ctx::connect(&conn)?, &id).await,
        C::Plan { conn, id, action } => {
            let (action, feedback) = match action {
                PlanAction::Approve => ("approve", None),
                PlanAction::Revise { feedback } => ("revise", Some(joined(&feedback))),
                PlanAction::Cancel => ("cancel", None),
            };
            decide::decide(&Ctx::connect(&conn)?, &id, "plan", action, feedback).await
        }
        C::Review { conn, id, action } => {
            let (action, feedback) = match action {
                ReviewAction::Approve => ("approve", None),
                ReviewAction::Changes { feedback } => ("changes", Some(joined(&feedback))),
            };
            decide::decide(&Ctx::connect(&conn)?, &id, "review", action, feedback).await
        }
        C::Cancel { conn, id } => decide::simple(&Ctx::connect(&conn)?, &id, "cancel").await,
        C::Retry { conn, id } => decide::simple(&Ctx::connect(&conn)?, &id, "retry").await,
        C::Usage { conn, days } => usage::show(&Ctx::connect(&conn)?, days).await,
        C::Pause { conn } => usage::set_paused(&Ctx::connect(&conn)?, true).await,
        C::Resume { conn } => usage::set_paused(&Ctx::connect(&conn)?, false).await,
        C::Budget { conn, action } => {
            let ctx = Ctx::connect(&conn)?;
            match action {
                None | Some(BudgetAction::Show) => budget::show(&ctx).await,
                Some(BudgetAction::Set(change)) => budget::set(&ctx, &change).await,
                Some(BudgetAction::Raise { id, usd }) => decide::budget(&ctx, &id, Some(usd)).await,
                Some(BudgetAction::Continue { id }) => decide::budget(&ctx, &id, None).await,
            }
        }
        C::RunnerToken { conn, action } => runners::run(&Ctx::connect(&conn)?, action).await,
        C::Mcp { conn } => {
            let ctx = Ctx::connect(&conn)?;
            crate::mcp_stdio::run(ctx.api.base(), ctx.api.token().unwrap_or_default())
                .await
                .map_err(|e| ClientError::Local(format!("{e:#}")))
        }
    }
}
