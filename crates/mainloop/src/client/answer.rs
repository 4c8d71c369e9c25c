//! Answering a worker's questions in the terminal: each question with its options
//! numbered, a line read per question ("2", "1,3" for several, or free text), asked
//! again when the line does not fit. Reads any `BufRead`, so a pipe drives it as well
//! as a person does.

use super::http::ClientError;
use super::render;
use super::views::QuestionView;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// One answer as the API takes it (`Answer`): chosen option labels, or free text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Choices(Vec<String>),
    Text(String),
}

/// Reads one typed line as the answer to `q`.
///
/// Numbers (separated by commas or spaces) choose options; an option's label typed out
/// chooses it too; anything else is free text, which every question accepts.
///
/// # Errors
/// Why the line does not answer the question (shown, then the question is asked again).
pub fn parse(q: &QuestionView, line: &str) -> Result<Answer, String> {
    let line = line.trim();
    if line.is_empty() {
        return Err(if q.options.is_empty() {
            "type an answer".into()
        } else {
            "type an option's number, or an answer of your own".into()
        });
    }
    if q.options.is_empty() {
        return Ok(Answer::Text(line.to_owned()));
    }
    let parts: Vec<&str> = line
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    if parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())) {
        let n = q.options.len();
        let mut labels: Vec<String> = Vec::new();
        for p in parts {
            let i: usize = p.parse().unwrap_or(0);
            let Some(option) = i.checked_sub(1).and_then(|i| q.options.get(i)) else {
                return Err(format!("{p} is not an option; choose from 1 to {n}"));
            };
            if !labels.contains(&option.label) {
                labels.push(option.label.clone());
            }
        }
        if labels.len() > 1 && !q.multi_select {
            return Err("this question takes one option".into());
        }
        return Ok(Answer::Choices(labels));
    }
    if let Some(o) = q
        .options
        .iter()
        .find(|o| o.label.eq_ignore_ascii_case(line))
    {
        return Ok(Answer::Choices(vec![o.label.clone()]));
    }
    Ok(Answer::Text(line.to_owned()))
}

/// What to type, under a question's options.
#[must_use]
pub fn hint(q: &QuestionView) -> &'static str {
    match (q.options.is_empty(), q.multi_select) {
        (true, _) => "Your answer: ",
        (false, false) => "Choose one (a number), or type your own answer: ",
        (false, true) => "Choose one or more (e.g. 1,3), or type your own answer: ",
    }
}

/// Asks every question on `out`, reading lines from `input`, until each has an answer.
///
/// # Errors
/// `input` ends before every question is answered, or reading or writing fails.
pub fn ask(
    questions: &[QuestionView],
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<BTreeMap<String, Answer>, ClientError> {
    let io = |e: std::io::Error| ClientError::local("asking the questions", e);
    let mut answers = BTreeMap::new();
    for (i, q) in questions.iter().enumerate() {
        write!(out, "{}", render::question(q, i + 1, questions.len())).map_err(io)?;
        loop {
            write!(out, "{}", hint(q)).map_err(io)?;
            out.flush().map_err(io)?;
            let mut line = String::new();
            if input.read_line(&mut line).map_err(io)? == 0 {
                writeln!(out).map_err(io)?;
                return Err(ClientError::Local(format!(
                    "the input ended before question {} of {} was answered; nothing was sent",
                    i + 1,
                    questions.len()
                )));
            }
            match parse(q, &line) {
                Ok(a) => {
                    answers.insert(q.id.clone(), a);
                    break;
                }
                Err(why) => writeln!(out, "  {why}").map_err(io)?,
            }
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::views::OptionView;

    fn q(multi: bool, options: &[&str]) -> QuestionView {
        QuestionView {
            id: "q1".into(),
            header: "H".into(),
            question: "Which?".into(),
            options: options
                .iter()
                .map(|l| OptionView {
                    label: (*l).into(),
                    description: String::new(),
                })
                .collect(),
            multi_select: multi,
        }
    }

    fn choices(labels: &[&str]) -> Answer {
        Answer::Choices(labels.iter().map(|l| (*l).to_owned()).collect())
    }

    #[test]
    fn numbers_labels_and_free_text() {
        let single = q(false, &["Rust", "Go"]);
        let multi = q(true, &["Tests", "Docs", "CI"]);
        assert_eq!(parse(&single, " 2\n"), Ok(choices(&["Go"])));
        assert_eq!(parse(&single, "rust"), Ok(choices(&["Rust"])));
        assert_eq!(
            parse(&single, "Zig, please"),
            Ok(Answer::Text("Zig, please".into()))
        );
        assert_eq!(parse(&multi, "1,3"), Ok(choices(&["Tests", "CI"])));
        assert_eq!(parse(&multi, "3 1 3"), Ok(choices(&["CI", "Tests"])));
        assert_eq!(parse(&q(false, &[]), "42"), Ok(Answer::Text("42".into())));
        assert!(parse(&single, "1,2").unwrap_err().contains("one option"));
        assert!(parse(&single, "3").unwrap_err().contains("from 1 to 2"));
        assert!(parse(&multi, "0").is_err());
        assert!(parse(&single, "   ").is_err());
    }

    #[test]
    fn asks_again_until_a_line_fits_and_fails_on_early_end() {
        let qs = [q(false, &["Rust", "Go"]), {
            let mut m = q(true, &["Tests", "Docs", "CI"]);
            m.id = "q2".into();
            m
        }];
        let mut out = Vec::new();
        let got = ask(&qs, &mut "7\n1\n\n1,3\n".as_bytes(), &mut out).unwrap();
        assert_eq!(got["q1"], choices(&["Rust"]));
        assert_eq!(got["q2"], choices(&["Tests", "CI"]));
        let shown = String::from_utf8(out).unwrap();
        assert!(
            shown.contains("1/2 [H] Which?\n  1. Rust\n  2. Go\n"),
            "{shown}"
        );
        assert!(
            shown.contains("7 is not an option; choose from 1 to 2"),
            "{shown}"
        );
        assert!(shown.contains("e.g. 1,3"), "{shown}");
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::json!({"q1": ["Rust"], "q2": ["Tests", "CI"]})
        );

        let e = ask(&qs, &mut "1\n".as_bytes(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("question 2 of 2"), "{e}");
    }
}
