//! The tasks' transcripts against what the fake agents wrote: each `text`, `tool_call`
//! and `tool_result` entry mapped back to the agent's line number, so that lost,
//! repeated and reordered lines are counted.

use anyhow::Result;
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::Engine;
use serde_json::Value;

/// The transcript kinds one fake-agent progress line becomes (in rotation).
pub(super) const AGENT_KINDS: [&str; 3] = ["text", "tool_call", "tool_result"];
/// What the transcripts hold.
#[derive(Debug, Default)]
pub(super) struct Transcripts {
    /// Per task: count of each agent kind.
    pub per_task: Vec<[u64; 3]>,
    /// Per task: `finished` entries.
    pub finished: Vec<u64>,
    /// Per task: how many of the agent's lines, from the first, are recorded in order
    /// without a gap.
    pub prefix: Vec<u64>,
    /// Lines missing inside a task's recorded sequence (a later one is recorded).
    pub gaps: u64,
    /// Entries whose step repeats or goes back.
    pub repeated: u64,
    /// Entries whose step is unreadable or does not match their kind.
    pub mismatched: u64,
    /// Per task: first and last agent-kind entry, wall ms.
    pub spans: Vec<Option<(i64, i64)>>,
    /// `created_at` (wall ms) of every agent-kind entry.
    pub times: Vec<i64>,
    pub rows: u64,
}

/// Which of the fake agent's progress lines (`i`) an entry of kind `AGENT_KINDS[kind]`
/// records: text `Working on step i.`, tool call `Bash: echo step i`, tool result
/// `step i-1` (the output of the call before it).
fn step_of(kind: usize, payload: &Value) -> Option<u64> {
    let text = payload["text"]
        .as_str()
        .or_else(|| payload["summary"].as_str())?;
    let digits: String = text
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .to_owned();
    let n: u64 = digits.parse().ok()?;
    Some(if kind == 2 { n + 1 } else { n })
}

/// Pages through each task's transcript and maps the agent-kind entries back to the
/// fake agent's lines.
pub(super) async fn read_transcripts(
    engine: &Engine,
    user: UserId,
    ids: &[TaskId],
) -> Result<Transcripts> {
    let mut t = Transcripts::default();
    for id in ids {
        let mut counts = [0_u64; 3];
        let mut finished = 0;
        let mut span: Option<(i64, i64)> = None;
        let mut after = 0;
        let mut next = 0_u64;
        loop {
            let page = engine.task_transcript(user, *id, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                t.rows += 1;
                let kind = e.entry.kind();
                if kind == "finished" {
                    finished += 1;
                }
                if let Some(k) = AGENT_KINDS.iter().position(|k| *k == kind) {
                    counts[k] += 1;
                    match step_of(k, &e.entry.payload()) {
                        Some(step) if step % 3 == k as u64 => {
                            if step >= next {
                                t.gaps += step - next;
                                next = step + 1;
                            } else {
                                t.repeated += 1;
                            }
                        }
                        _ => t.mismatched += 1,
                    }
                    let at = e.created_at.as_millis();
                    t.times.push(at);
                    span = Some(span.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
                }
            }
        }
        t.per_task.push(counts);
        t.finished.push(finished);
        t.prefix.push(next);
        t.spans.push(span);
    }
    Ok(t)
}

/// The transcripts against `events` lines per agent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tally {
    /// Agent-kind entries recorded.
    pub recorded: u64,
    /// A line missing inside a task's recorded sequence, or missing at the end of a task
    /// whose agent finished.
    pub lost: u64,
    /// Lines of tasks still streaming at the deadline that their agent had not written
    /// yet or we had not read (back-pressure).
    pub backlog: u64,
    /// Repeated lines and kind mismatches.
    pub extra: u64,
    /// Tasks with every line, in order.
    pub complete_tasks: usize,
    /// Tasks with exactly one `finished` entry.
    pub finished_tasks: usize,
}

impl Transcripts {
    pub fn tally(&self, events: u64) -> Tally {
        let (mut lost, mut backlog, mut complete_tasks) = (self.gaps, 0_u64, 0_usize);
        for (i, prefix) in self.prefix.iter().enumerate() {
            let missing = events.saturating_sub(*prefix);
            if self.finished[i] > 0 {
                lost += missing;
            } else {
                backlog += missing;
            }
            complete_tasks +=
                usize::from(*prefix == events && self.per_task[i].iter().sum::<u64>() == events);
        }
        Tally {
            recorded: self.per_task.iter().flatten().sum(),
            lost,
            backlog,
            extra: self.repeated + self.mismatched,
            complete_tasks,
            finished_tasks: self.finished.iter().filter(|f| **f == 1).count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_of_the_fake_agents_lines() {
        assert_eq!(
            step_of(0, &json!({"text": "Working on step 12."})),
            Some(12)
        );
        assert_eq!(
            step_of(
                1,
                &json!({"id": "toolu_fake_agent_4", "summary": "Bash: echo step 13"})
            ),
            Some(13)
        );
        assert_eq!(
            step_of(
                2,
                &json!({"tool_use_id": "toolu_fake_agent_4", "summary": "step 13"})
            ),
            Some(14)
        );
        assert_eq!(step_of(0, &json!({"text": "no number"})), None);
    }
}
