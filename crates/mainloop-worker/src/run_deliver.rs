//! Getting a run's input to its agent: the parked session answered through the control
//! protocol or given its next turn when it can take it, else a session started or
//! resumed (wherever the run's placement starts it) and sent a message.

use super::*;

pub(super) enum Delivery {
    Retry(JobError),
    Fail(String),
}

/// Gets a session that has received `input`: the parked one answered through the
/// control protocol when possible, else a started or resumed process given a message.
pub(super) async fn deliver(
    run: &Run<'_>,
    input: &AgentInput,
    fresh: bool,
) -> Result<Box<dyn AgentSession>, Delivery> {
    let Run {
        rt,
        user,
        task,
        phase,
        cwd,
        confined,
        input_key: key,
        ..
    } = *run;
    let engine = &rt.inner.engine;
    // An idle session still stopping may still be saving the conversation this run
    // resumes.
    rt.stopped(task.id).await;
    let lifecycle = rt.inner.agents.lifecycle(&task.agent);
    let live = match rt.take_parked(task.id).filter(|_| !fresh) {
        Some(parked) if parked.waiting_for == Waiting::NextTurn => {
            let text = message(task, input, phase, lifecycle);
            next_turn(parked, &text, mode_of(phase)).await
        }
        Some(parked) => reply_parked(task, input, parked).await,
        None => None,
    };
    if let Some(session) = live {
        let _ = engine
            .set_task_session(
                task.id,
                task.session_id.as_deref().unwrap_or_default(),
                Some(key),
            )
            .await;
        return Ok(session);
    }
    let (session_ref, new_id) = match &task.session_id {
        Some(id) if fresh => (SessionRef::New(id.clone()), Some(id.clone())),
        Some(id) => (SessionRef::Resume(id.clone()), None),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            (SessionRef::New(id.clone()), Some(id))
        }
    };
    let spec = RunSpec {
        cwd: cwd.to_path_buf(),
        session: session_ref,
        mode: mode_of(phase),
        model: task.model.clone().or_else(|| rt.inner.config.model.clone()),
        append_system_prompt: Some(instructions(lifecycle).to_owned()),
        env: confined.env.clone(),
    };
    let agent = rt
        .inner
        .agents
        .get(&task.agent)
        .ok_or_else(|| Delivery::Fail(crate::unavailable(&task.agent)))?;
    let mut session = agent
        .start(spec, run.placement)
        .map_err(|e| Delivery::Fail(e.to_string()))?;
    rt.record_pid(task.id, session.pid());
    // Record a new session before it can do anything, so a crash resumes it.
    if let Some(id) = &new_id {
        engine
            .set_task_session(task.id, id, None)
            .await
            .map_err(|e| Delivery::Retry(retry(e)))?;
    }
    let delivered = task.agent_input_key.as_deref() == Some(key);
    // A retry of a task whose setup failed before any agent ran starts the first
    // conversation, which needs the task as much as a fresh one does.
    let text = if fresh || task.session_id.is_none() {
        // A new conversation knows nothing yet: give it the task, then the input.
        match input {
            AgentInput::Start => message(task, input, phase, lifecycle),
            other => format!(
                "{}\n\n{}",
                message(task, &AgentInput::Start, phase, lifecycle),
                message(task, other, phase, lifecycle)
            ),
        }
    } else if delivered {
        CONTINUE.to_owned()
    } else {
        message(task, input, phase, lifecycle)
    };
    if let Err(e) = session.send_user_message(&text).await {
        session.kill().await;
        // Its stderr says why it died; give the reader a moment to drain the pipe.
        for _ in 0..20 {
            if !session.stderr_tail().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let tail = session.stderr_tail().join("\n");
        return Err(Delivery::Fail(format!(
            "could not talk to the agent ({e}): {tail}"
        )));
    }
    let session_id = new_id
        .or_else(|| task.session_id.clone())
        .unwrap_or_default();
    engine
        .set_task_session(task.id, &session_id, Some(key))
        .await
        .map_err(|e| Delivery::Retry(retry(e)))?;
    status(
        rt,
        user,
        task.id,
        if delivered {
            "agent relaunched"
        } else {
            "agent started"
        },
    )
    .await;
    Ok(session)
}

/// Answers a session parked on a control request with `input`; None, with the
/// session stopped so that it saves its conversation, when it cannot take it.
async fn reply_parked(
    task: &Task,
    input: &AgentInput,
    mut parked: Parked,
) -> Option<Box<dyn AgentSession>> {
    let reply = match (input, parked.waiting_for) {
        (AgentInput::Answers(a), Waiting::Answers) => Some(ControlReply::answers(
            &parked.input,
            &answers_by_question_text(&task.questions, a),
        )),
        (AgentInput::PlanApproved, Waiting::PlanReview) => Some(ControlReply::Allow {
            updated_input: parked.input.clone(),
        }),
        (AgentInput::PlanFeedback(f), Waiting::PlanReview) => Some(ControlReply::Deny {
            message: f.clone(),
            interrupt: false,
        }),
        _ => None,
    };
    let replied = match reply {
        Some(reply) => parked
            .session
            .reply(&parked.request_id, reply)
            .await
            .is_ok(),
        None => false,
    };
    if replied {
        return Some(parked.session);
    }
    // The parked process cannot take this input (or died): let it save its session,
    // then resume from disk.
    parked.session.stop(STOP_GRACE).await;
    None
}

/// Gives a session parked at the end of its turn its next message, in `mode`; None,
/// with the session stopped, when it cannot take it (it died, or cannot change mode
/// mid-session), and the caller resumes it from disk.
async fn next_turn(
    mut parked: Parked,
    text: &str,
    mode: AgentMode,
) -> Option<Box<dyn AgentSession>> {
    let in_mode = parked.mode == mode || parked.session.set_mode(mode).await.is_ok();
    if in_mode && parked.session.send_user_message(text).await.is_ok() {
        return Some(parked.session);
    }
    parked.session.stop(STOP_GRACE).await;
    None
}
