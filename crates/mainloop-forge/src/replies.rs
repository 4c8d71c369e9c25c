//! What people write on the forge in reply to a worker, and what mainloop posts so they
//! know how: answers to questions, decisions on a plan, and requests for changes on a
//! pull request. Pure text rules (documented in the README), so every case is tested.
//!
//! - **Answers**: one line per question, `N: answer`, where `N` is the question's number
//!   and the answer is an option's number or label (several, comma-separated, where the
//!   question allows it) or any other text as the answer in the writer's own words. All
//!   questions are answered in one comment; lines that do not start with a number are
//!   ignored. With a single question, `/answer TEXT` works too.
//! - **Plan**: a comment whose first line is `/approve` or `LGTM` approves (so does a 👍
//!   reaction on the plan comment); `/revise FEEDBACK` asks for changes (the feedback may
//!   continue on the following lines); `/cancel` cancels.
//! - **Pull request**: a review that requests changes, or any review or comment that
//!   mentions `@mainloop` or starts with `/revise`, sends all new feedback to the agent.

use crate::{Feedback, FeedbackKind};
use mainloop_domain::question::{Answer, Answers, Question};

/// What an answer comment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedAnswers {
    /// Not an attempt at answering (no numbered lines): ordinary discussion.
    NotAnAnswer,
    /// Every question answered.
    Complete(Answers),
    /// An attempt that cannot be used; the text says why (posted back as a reply).
    Invalid(String),
}

fn numbered_line(line: &str) -> Option<(usize, &str)> {
    let t = line.trim();
    let t = t.strip_prefix(['q', 'Q']).unwrap_or(t);
    let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 3 {
        return None;
    }
    let (num, rest) = t.split_at(digits);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix([':', '.', ')'])?.trim();
    if rest.is_empty() {
        return None;
    }
    Some((num.parse().ok()?, rest))
}

/// The chosen labels, if every comma-separated part names an option (by number or
/// label, ignoring case); `None` means the text is an answer in the writer's own words.
fn choices(q: &Question, value: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let by_number = part
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| q.options.get(i));
        let by_label = || {
            q.options
                .iter()
                .find(|o| o.label.eq_ignore_ascii_case(part))
        };
        let option = by_number.or_else(by_label)?;
        if !out.contains(&option.label) {
            out.push(option.label.clone());
        }
    }
    (!out.is_empty()).then_some(out)
}

fn answer_for(q: &Question, value: &str) -> Result<Answer, String> {
    match choices(q, value) {
        Some(labels) if labels.len() > 1 && !q.multi_select => Err(format!(
            "\"{}\" takes one choice, but the reply names {}.",
            q.question,
            labels.len()
        )),
        Some(labels) => Ok(Answer::Choices(labels)),
        None => Ok(Answer::Text(value.to_owned())),
    }
}

/// Reads a comment as answers to `questions` (rules in the module docs).
#[must_use]
pub fn parse_answers(body: &str, questions: &[Question]) -> ParsedAnswers {
    if questions.is_empty() {
        return ParsedAnswers::NotAnAnswer;
    }
    let first = body.trim_start();
    if let Some(rest) = first.strip_prefix("/answer") {
        let rest = rest.trim();
        return match (questions, rest.is_empty()) {
            ([q], false) => match answer_for(q, rest) {
                Ok(a) => ParsedAnswers::Complete([(q.id.clone(), a)].into_iter().collect()),
                Err(e) => ParsedAnswers::Invalid(e),
            },
            ([_], true) => ParsedAnswers::Invalid("`/answer` needs the answer after it.".into()),
            _ => ParsedAnswers::Invalid(format!(
                "There are {} questions: answer them with one line each, like `1: …`.",
                questions.len()
            )),
        };
    }
    let mut answers = Answers::new();
    let mut any = false;
    for (n, value) in body.lines().filter_map(numbered_line) {
        any = true;
        let Some(q) = n.checked_sub(1).and_then(|i| questions.get(i)) else {
            return ParsedAnswers::Invalid(format!(
                "There is no question {n}; the questions are numbered 1 to {}.",
                questions.len()
            ));
        };
        match answer_for(q, value) {
            Ok(a) => {
                answers.insert(q.id.clone(), a);
            }
            Err(e) => return ParsedAnswers::Invalid(e),
        }
    }
    if !any {
        return ParsedAnswers::NotAnAnswer;
    }
    let missing: Vec<String> = questions
        .iter()
        .enumerate()
        .filter(|(_, q)| !answers.contains_key(&q.id))
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    if missing.is_empty() {
        ParsedAnswers::Complete(answers)
    } else {
        ParsedAnswers::Invalid(format!(
            "Please answer every question in one comment; missing: {}.",
            missing.join(", ")
        ))
    }
}

/// A decision on a plan, read from a comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanReply {
    Approve,
    Revise(String),
    Cancel,
    /// `/revise` without feedback.
    Invalid(String),
}

/// Reads a comment as a plan decision; `None` for ordinary discussion.
#[must_use]
pub fn parse_plan_reply(body: &str) -> Option<PlanReply> {
    let body = body.trim();
    let first = body.lines().next()?.trim();
    let lower = first.to_ascii_lowercase();
    if lower == "/approve" || lower == "lgtm" || first == "👍" || first == ":+1:" {
        return Some(PlanReply::Approve);
    }
    if lower == "/cancel" {
        return Some(PlanReply::Cancel);
    }
    let rest = body
        .strip_prefix("/revise")
        .or_else(|| body.strip_prefix("/REVISE"))?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let feedback = rest.trim();
    Some(if feedback.is_empty() {
        PlanReply::Invalid("`/revise` needs the changes you want after it.".into())
    } else {
        PlanReply::Revise(feedback.to_owned())
    })
}

fn mentions(body: &str, handle: &str) -> bool {
    let needle = format!("@{handle}");
    body.match_indices(&needle).any(|(i, _)| {
        let after = body[i + needle.len()..].chars().next();
        let before = body[..i].chars().next_back();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !before.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

fn triggers(f: &Feedback, handle: &str) -> bool {
    f.kind == FeedbackKind::ChangesRequested
        || f.body.trim_start().starts_with("/revise")
        || mentions(&f.body, handle)
}

/// The feedback to send the agent, if any of the new items asks for changes (a review
/// requesting changes, a `/revise`, or an `@handle` mention); all new items from people
/// other than `bot` are included so nothing said alongside is lost. Approvals and the
/// bot's own comments never trigger.
#[must_use]
pub fn review_feedback(items: &[Feedback], handle: &str, bot: &str) -> Option<String> {
    let human: Vec<&Feedback> = items
        .iter()
        .filter(|f| !f.author.eq_ignore_ascii_case(bot))
        .collect();
    if !human.iter().any(|f| triggers(f, handle)) {
        return None;
    }
    let mut out = String::new();
    for f in human {
        let body = f.body.trim();
        if body.is_empty() && f.kind != FeedbackKind::ChangesRequested {
            continue;
        }
        let what = match (f.kind, &f.path) {
            (FeedbackKind::ChangesRequested, _) => "requested changes".to_owned(),
            (FeedbackKind::Approved, _) => "approved".to_owned(),
            (FeedbackKind::LineComment, Some(path)) => match f.line {
                Some(line) => format!("on {path}:{line}"),
                None => format!("on {path}"),
            },
            _ => "commented".to_owned(),
        };
        out.push_str(&format!(
            "- @{} {what}: {}\n",
            f.author,
            body.replace('\n', "\n  ")
        ));
    }
    Some(out)
}

/// The comment that puts a worker's questions on the issue, with how to answer.
#[must_use]
pub fn questions_comment(questions: &[Question]) -> String {
    let mut out = String::from("**The worker has questions.** Answer here or in mainloop.\n\n");
    for (i, q) in questions.iter().enumerate() {
        let header = if q.header.is_empty() {
            String::new()
        } else {
            format!("{} — ", q.header)
        };
        let many = if q.multi_select {
            " *(choose any)*"
        } else {
            ""
        };
        out.push_str(&format!("**{}. {header}{}**{many}\n", i + 1, q.question));
        for (j, o) in q.options.iter().enumerate() {
            if o.description.is_empty() {
                out.push_str(&format!("   {}. {}\n", j + 1, o.label));
            } else {
                out.push_str(&format!("   {}. {} — {}\n", j + 1, o.label, o.description));
            }
        }
        out.push('\n');
    }
    out.push_str(
        "Reply with one line per question: the question's number, a colon, and an option's \
         number or label (several, comma-separated, where allowed) or your own words:\n\n```\n",
    );
    for (i, q) in questions.iter().enumerate() {
        let example = if q.multi_select && q.options.len() > 1 {
            "1, 2"
        } else if q.options.is_empty() {
            "your answer"
        } else {
            "1"
        };
        out.push_str(&format!("{}: {example}\n", i + 1));
    }
    out.push_str("```\n");
    out
}

/// The comment that puts a plan on the issue, with how to decide.
#[must_use]
pub fn plan_comment(plan: &str) -> String {
    format!(
        "**The worker's plan.** Approve with a 👍 on this comment or a reply `/approve`; ask \
         for changes with `/revise what to change`; stop with `/cancel`. Or decide in \
         mainloop.\n\n---\n\n{}\n",
        plan.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_domain::question::QuestionOption;

    fn q(id: &str, text: &str, options: &[&str], multi: bool) -> Question {
        Question {
            id: id.into(),
            header: String::new(),
            question: text.into(),
            options: options
                .iter()
                .map(|l| QuestionOption {
                    label: (*l).into(),
                    description: format!("{l} desc"),
                })
                .collect(),
            multi_select: multi,
        }
    }

    fn two() -> Vec<Question> {
        vec![
            q("q1", "Which language?", &["Rust", "Go"], false),
            q("q2", "Which extras?", &["Tests", "Docs", "CI"], true),
        ]
    }

    fn done(pairs: &[(&str, Answer)]) -> ParsedAnswers {
        ParsedAnswers::Complete(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn labels(l: &[&str]) -> Answer {
        Answer::Choices(l.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn numbers_labels_and_own_words() {
        assert_eq!(
            parse_answers("1: 2\n2: 1, 3", &two()),
            done(&[("q1", labels(&["Go"])), ("q2", labels(&["Tests", "CI"]))])
        );
        assert_eq!(
            parse_answers("Q1. rust\nq2) docs,tests,docs", &two()),
            done(&[
                ("q1", labels(&["Rust"])),
                ("q2", labels(&["Docs", "Tests"]))
            ])
        );
        assert_eq!(
            parse_answers("Thanks!\n1: Zig, please\n2: 2\nCheers", &two()),
            done(&[
                ("q1", Answer::Text("Zig, please".into())),
                ("q2", labels(&["Docs"]))
            ])
        );
        // A number out of an option's range is the writer's own words.
        assert_eq!(
            parse_answers("1: 7\n2: 1", &two()),
            done(&[("q1", Answer::Text("7".into())), ("q2", labels(&["Tests"]))])
        );
    }

    #[test]
    fn incomplete_or_wrong_attempts_say_why() {
        let ParsedAnswers::Invalid(why) = parse_answers("1: Rust", &two()) else {
            panic!()
        };
        assert!(why.contains("missing: 2"), "{why}");
        let ParsedAnswers::Invalid(why) = parse_answers("1: Rust, Go\n2: 1", &two()) else {
            panic!()
        };
        assert!(why.contains("one choice"), "{why}");
        let ParsedAnswers::Invalid(why) = parse_answers("3: x\n1: 1\n2: 1", &two()) else {
            panic!()
        };
        assert!(why.contains("no question 3"), "{why}");
    }

    #[test]
    fn discussion_is_not_an_answer() {
        for body in [
            "Looks good",
            "",
            "1:",
            "I think 2 is fine",
            "2023: a year",
            "- 1: no (a list item)",
        ] {
            assert_eq!(
                parse_answers(body, &two()),
                ParsedAnswers::NotAnAnswer,
                "{body:?}"
            );
        }
        assert_eq!(parse_answers("1: x", &[]), ParsedAnswers::NotAnAnswer);
    }

    #[test]
    fn answer_command_for_a_single_question() {
        let one = vec![q("q1", "Which colour?", &["Red", "Blue"], false)];
        assert_eq!(
            parse_answers("/answer blue", &one),
            done(&[("q1", labels(&["Blue"]))])
        );
        assert_eq!(
            parse_answers("/answer teal, really", &one),
            done(&[("q1", Answer::Text("teal, really".into()))])
        );
        assert!(matches!(
            parse_answers("/answer", &one),
            ParsedAnswers::Invalid(_)
        ));
        assert!(matches!(
            parse_answers("/answer 1", &two()),
            ParsedAnswers::Invalid(_)
        ));
    }

    #[test]
    fn plan_replies() {
        assert_eq!(parse_plan_reply("/approve"), Some(PlanReply::Approve));
        assert_eq!(
            parse_plan_reply("  LGTM\nship it"),
            Some(PlanReply::Approve)
        );
        assert_eq!(parse_plan_reply("👍"), Some(PlanReply::Approve));
        assert_eq!(parse_plan_reply("/cancel"), Some(PlanReply::Cancel));
        assert_eq!(
            parse_plan_reply("/revise add tests\nand docs"),
            Some(PlanReply::Revise("add tests\nand docs".into()))
        );
        assert!(matches!(
            parse_plan_reply("/revise"),
            Some(PlanReply::Invalid(_))
        ));
        for body in ["looks good to me", "/revised?", "I /approve", "", "approve"] {
            assert_eq!(parse_plan_reply(body), None, "{body:?}");
        }
    }

    fn fb(kind: FeedbackKind, author: &str, body: &str) -> Feedback {
        Feedback {
            id: 1,
            kind,
            author: author.into(),
            body: body.into(),
            path: None,
            line: None,
            url: String::new(),
        }
    }

    #[test]
    fn review_feedback_triggers() {
        let bot = "mainloop-bot";
        assert_eq!(
            review_feedback(
                &[fb(FeedbackKind::Comment, "alice", "nice")],
                "mainloop",
                bot
            ),
            None
        );
        assert_eq!(
            review_feedback(&[fb(FeedbackKind::Approved, "alice", "")], "mainloop", bot),
            None
        );
        assert_eq!(
            review_feedback(
                &[fb(FeedbackKind::Comment, "bob", "ping @mainloopx")],
                "mainloop",
                bot
            ),
            None
        );
        assert_eq!(
            review_feedback(
                &[fb(FeedbackKind::Comment, bot, "/revise loop")],
                "mainloop",
                bot
            ),
            None
        );
        let mut line = fb(FeedbackKind::LineComment, "alice", "off by one");
        line.path = Some("src/a.rs".into());
        line.line = Some(12);
        let out = review_feedback(
            &[
                line,
                fb(FeedbackKind::ChangesRequested, "alice", "see inline"),
            ],
            "mainloop",
            bot,
        )
        .unwrap_or_default();
        assert!(out.contains("@alice on src/a.rs:12: off by one"), "{out}");
        assert!(
            out.contains("@alice requested changes: see inline"),
            "{out}"
        );
        let out = review_feedback(
            &[fb(
                FeedbackKind::Comment,
                "bob",
                "@mainloop please rename foo",
            )],
            "mainloop",
            bot,
        )
        .unwrap_or_default();
        assert!(out.contains("please rename foo"), "{out}");
        assert!(
            review_feedback(
                &[fb(FeedbackKind::Commented, "bob", "/revise use a map")],
                "mainloop",
                bot
            )
            .is_some()
        );
    }

    #[test]
    fn posted_comments_explain_the_rules_and_round_trip() {
        let text = questions_comment(&two());
        assert!(text.contains("**1. Which language?**"), "{text}");
        assert!(text.contains("2. Go — Go desc"), "{text}");
        assert!(text.contains("*(choose any)*"), "{text}");
        // The example in the instructions is itself a valid answer.
        let example = text.split("```\n").nth(1).unwrap_or_default();
        assert!(
            matches!(parse_answers(example, &two()), ParsedAnswers::Complete(_)),
            "{example}"
        );
        let plan = plan_comment("# Plan\n\nDo it.");
        assert!(
            plan.contains("/approve") && plan.ends_with("Do it.\n"),
            "{plan}"
        );
    }

    mod properties {
        use super::*;
        use mainloop_domain::question::validate_answers;
        use proptest::prelude::*;

        fn questions() -> impl Strategy<Value = Vec<Question>> {
            prop::collection::vec(
                (
                    prop::collection::vec("[A-Za-z][A-Za-z ]{0,8}", 0..4),
                    any::<bool>(),
                ),
                1..4,
            )
            .prop_map(|qs| {
                qs.into_iter()
                    .enumerate()
                    .map(|(i, (labels, multi))| {
                        let mut seen = Vec::new();
                        for l in labels {
                            let l = l.trim().to_owned();
                            if !l.is_empty()
                                && !seen.iter().any(|s: &String| s.eq_ignore_ascii_case(&l))
                            {
                                seen.push(l);
                            }
                        }
                        let refs: Vec<&str> = seen.iter().map(String::as_str).collect();
                        q(
                            &format!("q{}", i + 1),
                            &format!("Question {i}?"),
                            &refs,
                            multi,
                        )
                    })
                    .collect()
            })
        }

        /// Lines shaped like answers, mixed with noise.
        fn bodies() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    ("[0-9]{1,2}", "[:.)]", "[ -~]{0,20}")
                        .prop_map(|(n, sep, v)| format!("{n}{sep} {v}")),
                    "[ -~]{0,30}",
                    "\\PC{0,30}",
                ],
                0..6,
            )
            .prop_map(|lines| lines.join("\n"))
        }

        proptest! {
            #[test]
            fn complete_answers_always_validate(qs in questions(), body in bodies()) {
                if let ParsedAnswers::Complete(a) = parse_answers(&body, &qs) {
                    prop_assert!(validate_answers(&qs, &a).is_ok(), "{body:?} gave {a:?}");
                }
            }

            #[test]
            fn arbitrary_text_never_panics(body in "\\PC{0,200}", qs in questions()) {
                let _ = parse_answers(&body, &qs);
                if let Some(PlanReply::Revise(f)) = parse_plan_reply(&body) {
                    prop_assert!(!f.trim().is_empty());
                }
                let f = Feedback { id: 1, kind: FeedbackKind::Comment, author: "a".into(), body, path: None, line: None, url: String::new() };
                let _ = review_feedback(&[f], "mainloop", "bot");
            }
        }
    }
}
