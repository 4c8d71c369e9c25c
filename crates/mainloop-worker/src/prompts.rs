//! The words a worker's agent receives: mainloop's standing instructions and the message
//! for each way a session starts or resumes, in the voice of how the agent plans and
//! asks (its own tools, or the convention `convention` reads).

use mainloop_domain::question::{Answers, Question, answers_by_question_text};
use mainloop_domain::records::Task;
use mainloop_domain::task::{AgentInput, AgentPhase, RetryNote};

use crate::convention::Lifecycle;

/// Appended to the system prompt of an agent that plans and asks with its own tools.
pub const WORKER_INSTRUCTIONS: &str = "\
You are a mainloop worker: you carry out one task in this git worktree while the human is \
away. The human sees only what you ask through AskUserQuestion, the plan you submit with \
ExitPlanMode, and your finished work.
- Stay inside this repository.
- When you need a decision, ask with AskUserQuestion (offer concrete options); do not guess \
on things that matter.
- While planning, explore read-only, write the plan to the plan file, then call ExitPlanMode.
- When implementing, make focused changes, run the project's tests if there are any, and \
finish with a short summary. mainloop commits your work and runs the project's checks: \
do not commit, stash or switch branches yourself (the repository's git data is read-only \
to you).";

/// The standing instructions of an agent that plans and asks by the end of its turn.
pub const BY_TURN_INSTRUCTIONS: &str = "\
You are a mainloop worker: you carry out one task in this git worktree while the human is \
away. The human sees only the questions you ask, the plan you propose, and your finished \
work.
- Stay inside this repository.
- While planning you are read-only: explore, then end your turn with the plan itself as \
your final message, in Markdown. mainloop shows that message to the human; once it is \
approved you are told to implement it.
- When you need a decision, do not guess on things that matter: end your turn with a \
message holding only a block like this one (JSON; one entry per question; leave options \
empty for a free-text answer). The answers come in the next message.
<mainloop-questions>
{\"questions\": [{\"question\": \"Which database should the cache use?\", \"header\": \"Database\", \
\"options\": [{\"label\": \"SQLite\", \"description\": \"one file, no server\"}], \"multiSelect\": false}]}
</mainloop-questions>
- When implementing, make focused changes, run the project's tests if there are any, and \
finish with a short summary. mainloop commits your work and runs the project's checks: \
do not commit, stash or switch branches yourself (the repository's git data is read-only \
to you).";

/// The standing instructions for an agent with `lifecycle`.
#[must_use]
pub const fn instructions(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::Native => WORKER_INSTRUCTIONS,
        Lifecycle::ByTurn => BY_TURN_INSTRUCTIONS,
    }
}

/// The user message that starts or resumes a session in `phase` for `input`.
#[must_use]
pub fn message(task: &Task, input: &AgentInput, phase: AgentPhase, lifecycle: Lifecycle) -> String {
    let base = input_message(task, input);
    if lifecycle == Lifecycle::Native {
        return base;
    }
    match (input, phase) {
        (AgentInput::Start, AgentPhase::Plan) => format!(
            "{base}\nYou are planning (read-only). Explore, then reply with your plan as your \
             final message, or ask first if something that matters is unclear."
        ),
        (AgentInput::Start, AgentPhase::Implement) => {
            format!("{base}\nImplement it now in this worktree.")
        }
        (AgentInput::PlanFeedback(feedback), _) => format!(
            "Please revise the plan. Feedback from the reviewer:\n\n{feedback}\n\nReply with \
             the revised plan in full as your final message."
        ),
        (AgentInput::Answers(_), AgentPhase::Plan) => {
            format!("{base}\nContinue planning, and reply with your plan as your final message.")
        }
        _ => base,
    }
}

/// The user message that starts or resumes the session for `input`.
#[must_use]
pub fn input_message(task: &Task, input: &AgentInput) -> String {
    match input {
        AgentInput::Start => format!("Task: {}\n\nRepository: {}\n", task.description, task.repo),
        AgentInput::Answers(answers) => answers_text(&task.questions, answers),
        AgentInput::PlanApproved => {
            "Your plan was approved. Implement it now in this worktree.".to_owned()
        }
        AgentInput::PlanFeedback(feedback) => format!(
            "Please revise the plan. Feedback from the reviewer:\n\n{feedback}\n\nWrite the revised plan and call ExitPlanMode again."
        ),
        AgentInput::CheckFailure(output) => format!(
            "The project's checks failed on your work. Fix the problems; the output was:\n\n```\n{output}\n```"
        ),
        AgentInput::ReviewFeedback(feedback) => {
            format!("The reviewer asked for changes:\n\n{feedback}")
        }
        AgentInput::MergeConflict(files) => format!(
            "Merging your branch into {} conflicted. The base branch has been merged into your \
             branch, leaving conflict markers in: {files}. Resolve them keeping both sides' \
             intent, and make sure everything still builds and passes.",
            task.base_branch.as_deref().unwrap_or("the base branch")
        ),
        AgentInput::Retry => {
            "The previous attempt stopped before finishing. Continue the task where you left off."
                .to_owned()
        }
        AgentInput::RetryWith(note) => retry_text(note),
    }
}

/// A retry's message: why the last run failed when it changed nothing, and what the
/// human said to do differently.
fn retry_text(note: &RetryNote) -> String {
    let mut out = if note.no_changes {
        String::from(
            "Your last run changed no files. Whatever it reported, nothing was written to \
             this worktree, so there was nothing to review. Do the task now and make the \
             changes in the files themselves.",
        )
    } else {
        String::from(
            "The previous attempt stopped before finishing. Continue the task where you left off.",
        )
    };
    if let Some(feedback) = &note.feedback {
        out.push_str(&format!(
            "\n\nWhat the human asks you to do differently:\n\n{feedback}"
        ));
    }
    out
}

/// The message sent to a relaunched session whose input was already delivered.
pub const CONTINUE: &str =
    "mainloop restarted while you were working. Continue the task where you left off.";

fn answers_text(questions: &[Question], answers: &Answers) -> String {
    let by_text = answers_by_question_text(questions, answers);
    let mut out = String::from("Answers to your questions:\n");
    for (q, a) in by_text {
        out.push_str(&format!("- {q} → {a}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_domain::question::{Answer, QuestionOption};

    #[test]
    fn a_retry_after_no_changes_says_so_plainly_with_the_feedback() {
        let text = retry_text(&RetryNote {
            feedback: Some("Write GREETING.md with the Write tool.".into()),
            no_changes: true,
        });
        assert!(
            text.starts_with("Your last run changed no files."),
            "{text}"
        );
        assert!(
            text.ends_with("Write GREETING.md with the Write tool."),
            "{text}"
        );
        let text = retry_text(&RetryNote {
            feedback: Some("Use tabs.".into()),
            no_changes: false,
        });
        assert!(
            text.contains("Continue the task where you left off."),
            "{text}"
        );
        assert!(!text.contains("changed no files"), "{text}");
        assert!(text.ends_with("Use tabs."), "{text}");
    }

    #[test]
    fn the_by_turn_instructions_teach_the_block_the_convention_reads() {
        use crate::convention::{QUESTIONS_TAG, Reply, read};
        let open = format!("<{QUESTIONS_TAG}>");
        let at = BY_TURN_INSTRUCTIONS.find(&open).unwrap();
        let Reply::Questions(qs) = read(&BY_TURN_INSTRUCTIONS[at..]) else {
            panic!("the example block does not read as questions")
        };
        assert_eq!(qs[0].header, "Database");
        assert_eq!(instructions(Lifecycle::Native), WORKER_INSTRUCTIONS);
    }

    #[test]
    fn answers_are_given_by_question_text() {
        let q = Question {
            id: "q1".into(),
            header: "DB".into(),
            question: "Which database?".into(),
            options: vec![QuestionOption {
                label: "SQLite".into(),
                description: String::new(),
            }],
            multi_select: false,
        };
        let a: Answers = [("q1".to_owned(), Answer::Choices(vec!["SQLite".into()]))]
            .into_iter()
            .collect();
        let text = answers_text(&[q], &a);
        assert!(text.contains("Which database? → SQLite"), "{text}");
    }
}
