//! One agent run: start or resume the session, deliver its input, and carry out what
//! `react` makes of its events until it finishes, fails, or waits for the human (then
//! the session is parked and the slot freed); after a failure, `retry::decide` says
//! whether to start again, resume, or fail the task.

use crate::confine::{Confined, with_vars};
use crate::convention::Lifecycle;
use crate::on_runner::Site;
use crate::prompts::{CONTINUE, instructions, message};
use crate::react::{Context, Step, react};
use crate::retry::{Action, Attempts, RetryPolicy, decide};
use crate::steps::{apply, fail, load, retry, status, worktree};
use crate::{Parked, Runtime, Waiting};
use deliver::{Delivery, deliver};
use mainloop_agent::{
    AgentEvent, AgentFailure, AgentMode, AgentSession, ControlReply, RunSpec, SessionRef,
};
use mainloop_domain::question::answers_by_question_text;
use mainloop_domain::records::Task;
use mainloop_domain::task::{AgentInput, AgentPhase, TaskEvent, TaskState};
use mainloop_domain::transcript::TranscriptEntry;
use mainloop_domain::usage;
use mainloop_domain::{TaskId, Timestamp, UserId};
use mainloop_engine::{Gate, JobContext, JobError, RunAgent};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[path = "run_deliver.rs"]
mod deliver;

/// How long an agent whose session ends normally may take to save it and exit before
/// it is killed; Claude Code needs tens of milliseconds.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Removes the task's cancel token when the run ends, however it ends.
struct RunningGuard<'a> {
    rt: &'a Runtime,
    task: TaskId,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.rt.inner.running.lock() {
            r.remove(&self.task);
        }
    }
}

const fn state_of(phase: AgentPhase) -> TaskState {
    match phase {
        AgentPhase::Plan => TaskState::Planning,
        AgentPhase::Implement => TaskState::Implementing,
    }
}

const fn mode_of(phase: AgentPhase) -> AgentMode {
    match phase {
        AgentPhase::Plan => AgentMode::Plan,
        AgentPhase::Implement => AgentMode::Implement,
    }
}

/// `task.run_agent`.
pub(crate) async fn run_agent(
    rt: &Runtime,
    ctx: &JobContext,
    job: RunAgent,
) -> Result<(), JobError> {
    let RunAgent { step, phase, input } = job;
    let Some((user, task)) = load(rt, step.task_id).await? else {
        return Ok(());
    };
    if task.state != state_of(phase) {
        // Cancelled, failed or moved on before this run started.
        return Ok(());
    }
    // What the agent has not been told yet, the run after a hold tells it.
    let delivered = task.agent_input_key.as_deref() == Some(ctx.job.key.as_str());
    if held(rt, user, &task, (!delivered).then(|| input.clone())).await? {
        return Ok(());
    }
    let cancel = CancellationToken::new();
    if let Ok(mut r) = rt.inner.running.lock() {
        r.insert(task.id, cancel.clone());
    }
    let _guard = RunningGuard { rt, task: task.id };
    // An agent with a cap of its own runs at most that many at once, whatever the slots.
    let _permit = match rt.inner.agent_permits.get(&task.agent) {
        Some(permits) => tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            permit = permits.clone().acquire_owned() => permit.ok(),
        },
        None => None,
    };

    if rt.inner.agents.get(&task.agent).is_none() {
        return fail(rt, task.id, crate::unavailable(&task.agent)).await;
    }
    let wt = match worktree(rt, &task).await {
        Ok(w) => w,
        Err(e) => return fail(rt, task.id, format!("could not prepare the workspace: {e}")).await,
    };
    let mut task = task;
    loop {
        let Some(site) = rt.site_for(user, &task, &wt, &cancel).await? else {
            return Ok(());
        };
        let (confined, cwd) = match &site {
            Site::Here(_) => {
                if !rt.prepare_environment(user, &task, &wt, &cancel).await? {
                    return Ok(());
                }
                match rt.confine(task.id, &wt).await {
                    Ok(c) => (c, wt.path.clone()),
                    Err(e) => return fail(rt, task.id, e).await,
                }
            }
            Site::Runner(on) => {
                let vars = match rt
                    .prepare_environment_on(user, &task, &wt, on, &cancel)
                    .await
                {
                    Ok(Some(vars)) => vars,
                    Ok(None) => return Ok(()),
                    // Lost during setup: placed again, as when lost while preparing.
                    Err(_) if !rt.is_connected(user, on.runner).await => continue,
                    Err(e) => return Err(e),
                };
                let env = with_vars(rt.inner.config.agent_env.clone(), vars);
                (Confined::on_runner(env, &on.home), on.work.clone())
            }
        };
        let placement = site.placement(rt, &task, confined.placement());
        let run = Run {
            rt,
            user,
            task: &task,
            phase,
            cwd: &cwd,
            confined: &confined,
            placement: placement.as_ref(),
            back: match &site {
                Site::Runner(on) => Some((&wt, on)),
                Site::Here(_) => None,
            },
            input_key: &ctx.job.key,
        };
        let ended = match &site {
            // The work and the agent's session go back now and then while it runs, so
            // that a runner lost mid-run costs little of either.
            Site::Runner(on) => {
                Box::pin(rt.saving(&task, &wt, on, attempts(run, &site, &input, &cancel))).await
            }
            Site::Here(_) => attempts(run, &site, &input, &cancel).await,
        };
        if let Site::Runner(on) = &site {
            rt.take_back(&task, &wt, on).await;
            // A runner launched for this run goes with it: a waiting task holds none.
            if let Some(launched) = &on.launched {
                rt.end_launched(&task, on.runner, launched.run.as_deref())
                    .await;
            }
        }
        match ended? {
            Ended::Done => return Ok(()),
            // Placed again within this job: a lost runner is not a failed attempt.
            Ended::RunnerLost => match load(rt, task.id).await? {
                Some((_, t)) if t.state == state_of(phase) => task = t,
                _ => return Ok(()),
            },
        }
    }
}

/// How a run's attempts ended.
enum Ended {
    Done,
    /// Its runner went away: the run is placed again.
    RunnerLost,
}

/// Runs the agent until the run ends, parks, or fails for good; after a failure,
/// `retry::decide` says whether to start again, resume, or fail the task. A run whose
/// runner went away ends so, to be placed again.
async fn attempts(
    first: Run<'_>,
    site: &Site,
    input: &AgentInput,
    cancel: &CancellationToken,
) -> Result<Ended, JobError> {
    let Run {
        rt, user, phase, ..
    } = first;
    let policy = RetryPolicy {
        api_retries: rt.inner.config.api_retries,
        api_retry_delay: rt.inner.config.api_retry_delay,
    };
    let mut task = first.task.clone();
    let mut attempts = Attempts::default();
    let runner_lost = async || match site {
        Site::Runner(on) => !rt.is_connected(user, on.runner).await,
        Site::Here(_) => false,
    };
    // When the run's input reached the agent: its first delivery in this run, which a
    // resumed session keeps (a session started afresh is told it again).
    let mut reached: Option<Instant> = None;
    loop {
        let run = Run {
            task: &task,
            ..first
        };
        let delivering = *reached.get_or_insert_with(Instant::now);
        let session = match deliver(&run, input, attempts.fresh).await {
            Ok(s) => s,
            Err(Delivery::Retry(e)) => return Err(e),
            Err(Delivery::Fail(_)) if runner_lost().await => {
                rt.undeliver_unless_saved(&task, delivering).await;
                return Ok(Ended::RunnerLost);
            }
            Err(Delivery::Fail(reason)) => return done(fail(rt, task.id, reason).await),
        };
        let (failure, why) = match pump(&run, session, cancel).await? {
            RunEnd::Ended => return Ok(Ended::Done),
            RunEnd::RunnerLost => {
                rt.undeliver_unless_saved(&task, delivering).await;
                return Ok(Ended::RunnerLost);
            }
            RunEnd::Failed { failure, why } => (failure, why),
        };
        if runner_lost().await {
            tracing::info!(task = %task.id, %why, "its runner disconnected; placing the run again");
            rt.undeliver_unless_saved(&task, delivering).await;
            return Ok(Ended::RunnerLost);
        }
        let (action, next) = decide(&failure, &why, attempts, policy);
        attempts = next;
        match action {
            Action::Fail(reason) => return done(fail(rt, task.id, reason).await),
            Action::Hold { until, reason } => {
                // An unknown reset is tried again after a while; the hold says when.
                let until = until.map_or_else(
                    || mainloop_engine::wake_time(None, mainloop_engine::now()),
                    |secs| {
                        Timestamp::from_millis(
                            i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX),
                        )
                    },
                );
                let event = TaskEvent::LimitReached {
                    reason,
                    until: Some(until),
                };
                return apply(rt, task.id, event).await.map(|_| Ended::Done);
            }
            Action::StartAfresh { note } => {
                reached = None;
                status(rt, user, task.id, &note).await;
            }
            Action::Resume { note } => status(rt, user, task.id, &note).await,
            Action::ResumeAfter { wait, note } => {
                status(rt, user, task.id, &note).await;
                tokio::select! {
                    () = cancel.cancelled() => return Ok(Ended::Done),
                    () = tokio::time::sleep(wait) => {}
                }
                // The session (and that it has this input) is recorded now; resume it,
                // unless the user paused meanwhile or a budget was reached.
                match load(rt, task.id).await? {
                    Some((_, t)) if t.state == state_of(phase) => task = t,
                    _ => return Ok(Ended::Done),
                }
                if held(rt, user, &task, None).await? {
                    return Ok(Ended::Done);
                }
            }
        }
    }
}

fn done(r: Result<(), JobError>) -> Result<Ended, JobError> {
    r.map(|()| Ended::Done)
}

/// Holds the task instead of running its agent while its user has paused all work or a
/// budget is reached, keeping `input` (what the agent was not told yet) for the run
/// after the hold. Whether it held.
async fn held(
    rt: &Runtime,
    user: UserId,
    task: &Task,
    input: Option<AgentInput>,
) -> Result<bool, JobError> {
    let gate = rt
        .inner
        .engine
        .spending_gate(user, task)
        .await
        .map_err(retry)?;
    let event = match gate {
        None => return Ok(false),
        Some(Gate::Paused) => TaskEvent::Paused { input },
        Some(Gate::Budget(r)) => TaskEvent::BudgetReached {
            scope: r.scope,
            reason: usage::reason(&r, &task.agent),
            input,
        },
    };
    apply(rt, task.id, event).await?;
    Ok(true)
}

/// How a pump ended.
enum RunEnd {
    /// Finished, parked, cancelled, or the task moved on: nothing more to do.
    Ended,
    /// The agent finished on a runner that went away before its work came back.
    RunnerLost,
    /// The agent failed; `why` tells a human.
    Failed { failure: AgentFailure, why: String },
}

/// Buffers transcript entries so a burst of agent output commits in one transaction.
struct Recorder<'a> {
    rt: &'a Runtime,
    user: UserId,
    task: TaskId,
    pending: Vec<TranscriptEntry>,
}

impl Recorder<'_> {
    /// Most output is buffered; entries that precede a lifecycle change (questions, a
    /// plan, the end) are stored at once, so the transcript never lags the task.
    async fn record(&mut self, entry: TranscriptEntry) {
        let routine = matches!(
            entry,
            TranscriptEntry::Text(_)
                | TranscriptEntry::ToolCall(_)
                | TranscriptEntry::ToolResult(_)
                | TranscriptEntry::Permission(_)
                | TranscriptEntry::Malformed(_)
        );
        self.pending.push(entry);
        if !routine || self.pending.len() >= 256 {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.pending);
        if let Err(e) = self
            .rt
            .inner
            .engine
            .record_transcript(self.user, self.task, &entries)
            .await
        {
            tracing::warn!(error = %e, lost = entries.len(), "could not record agent output");
        }
    }
}

/// What one agent run is about.
#[derive(Clone, Copy)]
struct Run<'a> {
    rt: &'a Runtime,
    user: UserId,
    task: &'a Task,
    phase: AgentPhase,
    cwd: &'a std::path::Path,
    confined: &'a Confined,
    /// Where the agent's process is started: here, or on the run's runner.
    placement: &'a dyn mainloop_agent::Placement,
    /// On a runner: the server's worktree and the runner, whose work comes back before
    /// the run's end is applied.
    back: Option<(&'a mainloop_git::Worktree, &'a crate::on_runner::OnRunner)>,
    input_key: &'a str,
}

/// What waiting for the next event came to.
enum Next {
    Event(AgentEvent),
    Cancelled,
    /// No output for the inactivity timeout.
    Silent,
}

/// The session's next event. Events already waiting are recorded together, in one
/// transaction; before waiting for more, whatever is pending is stored.
async fn next_event(
    session: &mut Box<dyn AgentSession>,
    rec: &mut Recorder<'_>,
    cancel: &CancellationToken,
    inactivity: Duration,
) -> Next {
    if let Some(ready) = futures::FutureExt::now_or_never(session.next_event()) {
        return ready.map_or_else(|| exited(session.as_ref()), Next::Event);
    }
    rec.flush().await;
    tokio::select! {
        () = cancel.cancelled() => Next::Cancelled,
        ev = tokio::time::timeout(inactivity, session.next_event()) => match ev {
            Ok(Some(e)) => Next::Event(e),
            Ok(None) => exited(session.as_ref()),
            Err(_) => Next::Silent,
        },
    }
}

/// An end of events without the `Exited` event every session sends last.
fn exited(session: &dyn AgentSession) -> Next {
    Next::Event(AgentEvent::Exited {
        code: session.exit_code(),
        failure: None,
    })
}

/// Reads the session's events and carries out the steps they call for, until the run
/// ends or parks.
async fn pump(
    run: &Run<'_>,
    mut session: Box<dyn AgentSession>,
    cancel: &CancellationToken,
) -> Result<RunEnd, JobError> {
    let Run {
        rt,
        user,
        task,
        phase,
        cwd,
        confined,
        input_key,
        ..
    } = *run;
    let mut rec = Recorder {
        rt,
        user,
        task: task.id,
        pending: Vec::new(),
    };
    let inactivity = rt.inner.config.inactivity_timeout;
    let lifecycle = rt.inner.agents.lifecycle(&task.agent);
    loop {
        let event = match next_event(&mut session, &mut rec, cancel, inactivity).await {
            Next::Event(event) => event,
            Next::Cancelled => {
                session.kill().await;
                return Ok(RunEnd::Ended);
            }
            Next::Silent => {
                session.kill().await;
                let why = format!(
                    "the agent produced no output for {} s and was stopped",
                    inactivity.as_secs()
                );
                let failure = AgentFailure::Other {
                    reason: why.clone(),
                };
                return Ok(RunEnd::Failed { failure, why });
            }
        };
        let ends = matches!(
            event,
            AgentEvent::Finished { .. } | AgentEvent::Exited { .. }
        );
        // An agent that hands over by the end of its turn may wait for the human with
        // its process kept, like one waiting on a question.
        let may_wait = lifecycle == Lifecycle::ByTurn && event.is_done();
        if matches!(event, AgentEvent::Finished { .. }) && !may_wait {
            // The turn is over: let the agent save all of it before anything else, so
            // that a later resume continues from its end.
            session.stop(STOP_GRACE).await;
        }
        let stderr = if ends {
            session.stderr_tail().join("\n")
        } else {
            String::new()
        };
        let cx = Context {
            phase,
            cwd,
            plans_dir: &confined.plans_dir,
            session_id: task.session_id.as_deref(),
            stderr: &stderr,
            lifecycle,
        };
        let steps = react(event, &cx);
        if may_wait && !steps.iter().any(|s| matches!(s, Step::Hand(_))) {
            session.stop(STOP_GRACE).await;
        }
        for step in steps {
            match step {
                Step::Record(entry) => rec.record(entry).await,
                Step::SetSession(id) => {
                    let _ = rt
                        .inner
                        .engine
                        .set_task_session(task.id, &id, Some(input_key))
                        .await;
                }
                Step::AddUsage {
                    cost_usd,
                    input_tokens,
                    output_tokens,
                } => {
                    let _ = rt
                        .inner
                        .engine
                        .add_task_usage(task.id, cost_usd, input_tokens, output_tokens)
                        .await;
                }
                Step::Reply { request_id, reply } => {
                    session.reply(&request_id, reply).await.map_err(retry)?;
                }
                Step::Quota(reports) => {
                    let windows =
                        crate::react::quota_windows(&task.agent, reports, mainloop_engine::now());
                    if let Err(error) = rt.inner.engine.record_quota(user, &windows).await {
                        tracing::warn!(%error, task = %task.id, "could not keep the quota windows");
                    }
                }
                Step::Park {
                    event,
                    request_id,
                    input,
                    waiting,
                } => {
                    return wait_for_human(
                        rt,
                        task.id,
                        session,
                        event,
                        (request_id, input, waiting),
                        mode_of(phase),
                    )
                    .await;
                }
                Step::Hand(event) => {
                    let waiting = (String::new(), serde_json::Value::Null, Waiting::NextTurn);
                    return wait_for_human(rt, task.id, session, event, waiting, mode_of(phase))
                        .await;
                }
                Step::Finish => {
                    // The work comes back before the end is applied: the end starts the
                    // commit and the checks, which must find it here.
                    if let Some((wt, on)) = run.back
                        && !rt.take_back_last(task, wt, on).await
                    {
                        if !rt.is_connected(user, on.runner).await {
                            return Ok(RunEnd::RunnerLost);
                        }
                        let why =
                            "the agent's work could not be brought back from its runner".to_owned();
                        let failure = AgentFailure::Other {
                            reason: why.clone(),
                        };
                        return Ok(RunEnd::Failed { failure, why });
                    }
                    return apply(rt, task.id, TaskEvent::AgentFinished)
                        .await
                        .map(|_| RunEnd::Ended);
                }
                Step::Fail { failure, why } => return Ok(RunEnd::Failed { failure, why }),
            }
        }
    }
}

/// Hands the task to the human (`event`) and parks the session, whose pending control
/// request `(id, input, kind)` the answer will resolve; the run ends and frees its slot.
async fn wait_for_human(
    rt: &Runtime,
    task: TaskId,
    mut session: Box<dyn AgentSession>,
    event: TaskEvent,
    (request_id, input, waiting_for): (String, serde_json::Value, Waiting),
    mode: AgentMode,
) -> Result<RunEnd, JobError> {
    if apply(rt, task, event).await?.is_none() {
        // The task moved on (cancelled, say): nobody will answer.
        session.kill().await;
        return Ok(RunEnd::Ended);
    }
    rt.park(
        task,
        Parked {
            session,
            request_id,
            input,
            waiting_for,
            mode,
            since: Instant::now(),
        },
    );
    Ok(RunEnd::Ended)
}
