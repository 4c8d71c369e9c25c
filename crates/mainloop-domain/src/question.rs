//! Questions a worker asks the human, and validation of the human's answers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One option of a multiple-choice question. The description is shown beside the label,
/// never hidden in a tooltip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuestionOption {
    pub label: String,
    #[serde(default)]
    pub description: String,
}

/// A clarifying question from a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Question {
    /// Stable id within the task ("q1", "q2", …); the API keys answers by it.
    pub id: String,
    /// Short label (a chip in the UI).
    #[serde(default)]
    pub header: String,
    /// The full question text; the agent receives answers keyed by this text.
    pub question: String,
    /// Empty for a free-text question.
    #[serde(default)]
    pub options: Vec<QuestionOption>,
    /// Several options may be chosen.
    #[serde(default)]
    pub multi_select: bool,
}

/// The human's answer to one question: chosen option labels, free text, or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Answer {
    Choices(Vec<String>),
    Text(String),
    /// Chosen labels with a note in the human's own words.
    WithNote {
        choices: Vec<String>,
        note: String,
    },
}

impl Answer {
    /// The answer in words: labels joined by ", ", a note after them in parentheses.
    #[must_use]
    pub fn as_text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Choices(labels) => labels.join(", "),
            Self::WithNote { choices, note } if choices.is_empty() => note.trim().to_owned(),
            Self::WithNote { choices, note } => format!("{} ({})", choices.join(", "), note.trim()),
        }
    }
}

/// Answers keyed by question id.
pub type Answers = BTreeMap<String, Answer>;

/// Why a set of answers was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("question '{0}' was not answered")]
    Missing(String),
    #[error("there is no question '{0}'")]
    UnknownQuestion(String),
    #[error("'{label}' is not an option of question '{question}'")]
    UnknownOption { question: String, label: String },
    #[error("question '{0}' takes exactly one choice")]
    NotSingle(String),
    #[error("the answer to question '{0}' is empty")]
    Empty(String),
}

/// Checks that every question has a usable answer and nothing else was sent.
///
/// Free text is accepted for any question (the agent's own UI offers "Other" too), alone
/// or as a note beside chosen labels; chosen labels must be options of their question.
///
/// # Errors
/// The first problem found, in question order.
pub fn validate_answers(questions: &[Question], answers: &Answers) -> Result<(), AnswerError> {
    for id in answers.keys() {
        if !questions.iter().any(|q| &q.id == id) {
            return Err(AnswerError::UnknownQuestion(id.clone()));
        }
    }
    for q in questions {
        match answers.get(&q.id) {
            None => return Err(AnswerError::Missing(q.id.clone())),
            Some(Answer::Text(t)) if t.trim().is_empty() => {
                return Err(AnswerError::Empty(q.id.clone()));
            }
            Some(Answer::Text(_)) => {}
            Some(Answer::WithNote { choices, note }) => {
                if note.trim().is_empty() {
                    return Err(AnswerError::Empty(q.id.clone()));
                }
                check_choices(q, choices)?;
            }
            Some(Answer::Choices(labels)) => {
                if labels.is_empty() {
                    return Err(AnswerError::Empty(q.id.clone()));
                }
                check_choices(q, labels)?;
            }
        }
    }
    Ok(())
}

/// Chosen labels must be options of their question, one unless it takes several.
fn check_choices(q: &Question, labels: &[String]) -> Result<(), AnswerError> {
    if !q.multi_select && labels.len() > 1 {
        return Err(AnswerError::NotSingle(q.id.clone()));
    }
    match labels
        .iter()
        .find(|l| !q.options.iter().any(|o| &o.label == *l))
    {
        Some(label) => Err(AnswerError::UnknownOption {
            question: q.id.clone(),
            label: label.clone(),
        }),
        None => Ok(()),
    }
}

/// The answers as the agent expects them: keyed by question text, several labels joined
/// by ", ".
#[must_use]
pub fn answers_by_question_text(
    questions: &[Question],
    answers: &Answers,
) -> BTreeMap<String, String> {
    questions
        .iter()
        .filter_map(|q| Some((q.question.clone(), answers.get(&q.id)?.as_text())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, multi: bool) -> Question {
        Question {
            id: id.into(),
            header: "H".into(),
            question: format!("Question {id}?"),
            options: vec![
                QuestionOption {
                    label: "A".into(),
                    description: "first".into(),
                },
                QuestionOption {
                    label: "B".into(),
                    description: "second".into(),
                },
            ],
            multi_select: multi,
        }
    }

    fn answers(pairs: &[(&str, Answer)]) -> Answers {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn choices_with_a_note_keep_both() {
        let qs = [q("q1", true)];
        let both = Answer::WithNote {
            choices: vec!["A".into(), "B".into()],
            note: " and keep it small ".into(),
        };
        let a = answers(&[("q1", both)]);
        assert_eq!(validate_answers(&qs, &a), Ok(()));
        assert_eq!(
            answers_by_question_text(&qs, &a)["Question q1?"],
            "A, B (and keep it small)"
        );
        let parsed: Answers =
            serde_json::from_str(r#"{"q1":{"choices":["A"],"note":"why"}}"#).unwrap();
        assert_eq!(validate_answers(&qs, &parsed), Ok(()));
        let empty_note = answers(&[(
            "q1",
            Answer::WithNote {
                choices: vec!["A".into()],
                note: " ".into(),
            },
        )]);
        assert_eq!(
            validate_answers(&qs, &empty_note),
            Err(AnswerError::Empty("q1".into()))
        );
        let bad_label = answers(&[(
            "q1",
            Answer::WithNote {
                choices: vec!["Z".into()],
                note: "n".into(),
            },
        )]);
        assert!(matches!(
            validate_answers(&qs, &bad_label),
            Err(AnswerError::UnknownOption { .. })
        ));
    }

    #[test]
    fn valid_single_multi_and_free_text() {
        let qs = [q("q1", false), q("q2", true), q("q3", false)];
        let a = answers(&[
            ("q1", Answer::Choices(vec!["A".into()])),
            ("q2", Answer::Choices(vec!["A".into(), "B".into()])),
            ("q3", Answer::Text("something else".into())),
        ]);
        assert_eq!(validate_answers(&qs, &a), Ok(()));
        let by_text = answers_by_question_text(&qs, &a);
        assert_eq!(by_text["Question q1?"], "A");
        assert_eq!(by_text["Question q2?"], "A, B");
        assert_eq!(by_text["Question q3?"], "something else");
    }

    #[test]
    fn each_kind_of_bad_answer_is_refused() {
        let qs = [q("q1", false)];
        let cases = [
            (answers(&[]), AnswerError::Missing("q1".into())),
            (
                answers(&[
                    ("q1", Answer::Choices(vec!["A".into()])),
                    ("zz", Answer::Text("x".into())),
                ]),
                AnswerError::UnknownQuestion("zz".into()),
            ),
            (
                answers(&[("q1", Answer::Choices(vec!["C".into()]))]),
                AnswerError::UnknownOption {
                    question: "q1".into(),
                    label: "C".into(),
                },
            ),
            (
                answers(&[("q1", Answer::Choices(vec!["A".into(), "B".into()]))]),
                AnswerError::NotSingle("q1".into()),
            ),
            (
                answers(&[("q1", Answer::Choices(vec![]))]),
                AnswerError::Empty("q1".into()),
            ),
            (
                answers(&[("q1", Answer::Text("  ".into()))]),
                AnswerError::Empty("q1".into()),
            ),
        ];
        for (a, want) in cases {
            assert_eq!(validate_answers(&qs, &a), Err(want));
        }
    }

    #[test]
    fn answer_json_shapes() {
        let a: Answers = serde_json::from_str(r#"{"q1":["A","B"],"q2":"free"}"#).unwrap();
        assert_eq!(a["q1"], Answer::Choices(vec!["A".into(), "B".into()]));
        assert_eq!(a["q2"], Answer::Text("free".into()));
        assert!(serde_json::from_str::<Answers>(r#"{"q1":3}"#).is_err());
    }
}
