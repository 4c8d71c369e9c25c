//! ACP elicitation (`elicitation/create`) as the port's clarifying questions: a form's
//! properties become [`AgentQuestion`]s, and the host's answers go back as content
//! typed by the form's schema. Only form mode is supported; anything else is declined.

use std::collections::{BTreeMap, HashSet};

use agent_client_protocol::v1::schema::{
    CreateElicitationRequest, CreateElicitationResponse, ElicitationAcceptAction,
    ElicitationAction, ElicitationContentValue, ElicitationMode, ElicitationPropertySchema,
    EnumOption, MultiSelectItems, StringPropertySchema,
};
use agent_client_protocol::{JsonRpcMessage, JsonRpcRequest, UntypedMessage};
use mainloop_agent::{AgentOption, AgentQuestion, ControlReply};
use serde_json::{Value, json};

use crate::Error;

/// The ACP method this module answers.
pub const METHOD: &str = "elicitation/create";
/// Headers are chips in the UI: longer titles are cut.
const HEADER_CHARS: usize = 30;
const YES: &str = "Yes";
const NO: &str = "No";

/// An `elicitation/create` request exactly as the agent sent it. Parsing is left to
/// [`form`] so that a malformed request is recorded and declined, not refused unseen.
#[derive(Debug, Clone)]
pub struct RawElicitation(pub Value);

impl JsonRpcMessage for RawElicitation {
    fn matches_method(method: &str) -> bool {
        method == METHOD
    }

    fn method(&self) -> &str {
        METHOD
    }

    fn to_untyped_message(&self) -> Result<UntypedMessage, agent_client_protocol::Error> {
        UntypedMessage::new(METHOD, &self.0)
    }

    fn parse_message(method: &str, params: &Value) -> Result<Self, agent_client_protocol::Error> {
        if method != METHOD {
            return Err(agent_client_protocol::Error::method_not_found());
        }
        Ok(Self(params.clone()))
    }
}

impl JsonRpcRequest for RawElicitation {
    type Response = CreateElicitationResponse;
}

/// What one question's answer becomes in the response content.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text,
    Integer,
    Number,
    Boolean,
    /// `(label, value)` pairs: the human picks a label, the agent gets the value.
    Choice(Vec<(String, String)>),
    Multi(Vec<(String, String)>),
    /// A form without fields: Yes accepts it, No declines it.
    Confirm,
}

/// One form property behind one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The property name, the key of its value in the response content.
    pub name: String,
    /// The question text, the key of its answer in the host's reply.
    pub question: String,
    pub required: bool,
    pub kind: Kind,
}

/// A form elicitation translated for the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub fields: Vec<Field>,
    pub questions: Vec<AgentQuestion>,
    /// The `input` of the Question event: the message and the property names.
    pub input: Value,
}

/// Translates an `elicitation/create` request's params into questions; an error says
/// why the request cannot be asked (malformed, URL mode, an unsupported property).
pub fn form(params: &Value) -> Result<Form, Error> {
    let request: CreateElicitationRequest = serde_json::from_value(params.clone())
        .map_err(|e| Error::Elicitation(format!("malformed request: {e}")))?;
    let schema = match &request.mode {
        ElicitationMode::Form(form) => &form.requested_schema,
        ElicitationMode::Url(_) => {
            return Err(Error::Elicitation(
                "URL-mode elicitation is not supported, declined".to_owned(),
            ));
        }
        _ => {
            return Err(Error::Elicitation(
                "unknown elicitation mode, declined".to_owned(),
            ));
        }
    };
    let message = request.message.trim();
    let required: HashSet<&str> = schema
        .required
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut fields = Vec::new();
    let mut questions = Vec::new();
    let mut seen = HashSet::new();
    let single = schema.properties.len() == 1;
    for (name, property) in &schema.properties {
        let (title, description, kind) = describe(name, property)?;
        let base = title
            .clone()
            .or(description)
            .unwrap_or_else(|| name.clone());
        let mut question = if single && !message.is_empty() && message != base {
            format!("{message}\n\n{base}")
        } else {
            base
        };
        if !seen.insert(question.clone()) {
            question = format!("{question} ({name})");
            seen.insert(question.clone());
        }
        questions.push(AgentQuestion {
            question: question.clone(),
            header: header(title.as_deref().unwrap_or(name)),
            options: options(&kind),
            multi_select: matches!(kind, Kind::Multi(_)),
        });
        fields.push(Field {
            name: name.clone(),
            question,
            required: required.contains(name.as_str()),
            kind,
        });
    }
    if fields.is_empty() {
        let question = if message.is_empty() {
            "Proceed?".to_owned()
        } else {
            message.to_owned()
        };
        let kind = Kind::Confirm;
        questions.push(AgentQuestion {
            question: question.clone(),
            header: header(schema.title.as_deref().unwrap_or("Confirm")),
            options: options(&kind),
            multi_select: false,
        });
        fields.push(Field {
            name: String::new(),
            question,
            required: true,
            kind,
        });
    }
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let input = json!({"message": request.message, "properties": names});
    Ok(Form {
        fields,
        questions,
        input,
    })
}

fn header(title: &str) -> String {
    let title = title.trim();
    if title.chars().count() <= HEADER_CHARS {
        return title.to_owned();
    }
    let cut: String = title.chars().take(HEADER_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// A property's title, description and answer kind.
fn describe(
    name: &str,
    property: &ElicitationPropertySchema,
) -> Result<(Option<String>, Option<String>, Kind), Error> {
    let unsupported = |what: &str| {
        Error::Elicitation(format!(
            "property {name:?} has an unsupported type ({what}), declined"
        ))
    };
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    Ok(match property {
        ElicitationPropertySchema::String(s) => {
            (nonempty(&s.title), nonempty(&s.description), string_kind(s))
        }
        ElicitationPropertySchema::Integer(s) => {
            (nonempty(&s.title), nonempty(&s.description), Kind::Integer)
        }
        ElicitationPropertySchema::Number(s) => {
            (nonempty(&s.title), nonempty(&s.description), Kind::Number)
        }
        ElicitationPropertySchema::Boolean(s) => {
            (nonempty(&s.title), nonempty(&s.description), Kind::Boolean)
        }
        ElicitationPropertySchema::Array(s) => {
            let pairs = match &s.items {
                MultiSelectItems::String(items) => items
                    .values
                    .iter()
                    .map(|v| (v.clone(), v.clone()))
                    .collect(),
                MultiSelectItems::Titled(items) => titled(&items.options),
                MultiSelectItems::Other(other) => {
                    return Err(unsupported(&format!("array of {}", other.type_)));
                }
                _ => return Err(unsupported("array")),
            };
            (
                nonempty(&s.title),
                nonempty(&s.description),
                Kind::Multi(unique(pairs)),
            )
        }
        ElicitationPropertySchema::Other(other) => return Err(unsupported(&other.type_)),
        _ => return Err(unsupported("unknown")),
    })
}

fn string_kind(s: &StringPropertySchema) -> Kind {
    let pairs = match (&s.one_of, &s.enum_values) {
        (Some(options), _) if !options.is_empty() => titled(options),
        (_, Some(values)) if !values.is_empty() => {
            values.iter().map(|v| (v.clone(), v.clone())).collect()
        }
        _ => return Kind::Text,
    };
    Kind::Choice(unique(pairs))
}

fn titled(options: &[EnumOption]) -> Vec<(String, String)> {
    options
        .iter()
        .map(|o| {
            let label = if o.title.trim().is_empty() {
                o.value.clone()
            } else {
                o.title.clone()
            };
            (label, o.value.clone())
        })
        .collect()
}

/// Labels must tell options apart: a repeated label keeps only its first value.
fn unique(pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    pairs
        .into_iter()
        .filter(|(label, _)| seen.insert(label.clone()))
        .collect()
}

fn options(kind: &Kind) -> Vec<AgentOption> {
    let option = |label: &str| AgentOption {
        label: label.to_owned(),
        description: String::new(),
    };
    match kind {
        Kind::Choice(pairs) | Kind::Multi(pairs) => pairs.iter().map(|(l, _)| option(l)).collect(),
        Kind::Boolean | Kind::Confirm => vec![option(YES), option(NO)],
        Kind::Text | Kind::Integer | Kind::Number => Vec::new(),
    }
}

/// The declined response, for requests that cannot be asked or answered.
#[must_use]
pub fn decline() -> CreateElicitationResponse {
    CreateElicitationResponse::new(ElicitationAction::Decline)
}

/// The response to the agent for the host's `reply` to the questions of `fields`:
/// answers (keyed by question text, as `ControlReply::answers` makes them) typed by
/// the schema; a refusal declines, a refusal that interrupts cancels. An answer that
/// does not fit its property is an error (the caller declines).
pub fn response(
    fields: &[Field],
    reply: &ControlReply,
) -> Result<CreateElicitationResponse, Error> {
    let answers = match reply {
        ControlReply::Deny {
            interrupt: true, ..
        } => return Ok(CreateElicitationResponse::new(ElicitationAction::Cancel)),
        ControlReply::Deny { .. } => return Ok(decline()),
        ControlReply::Allow { updated_input } => updated_input.get("answers"),
    };
    let mut content = BTreeMap::new();
    for field in fields {
        let answer = answers
            .and_then(|a| a.get(&field.question))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let Some(answer) = answer else {
            if field.required {
                return Err(Error::Elicitation(format!(
                    "no answer to the required {:?}",
                    field.name
                )));
            }
            continue;
        };
        match value(field, answer)? {
            Typed::Value(v) => {
                content.insert(field.name.clone(), v);
            }
            Typed::Confirmed => {}
            Typed::Refused => return Ok(decline()),
        }
    }
    Ok(CreateElicitationResponse::new(
        ElicitationAcceptAction::new().content(content),
    ))
}

enum Typed {
    Value(ElicitationContentValue),
    Confirmed,
    Refused,
}

fn value(field: &Field, answer: &str) -> Result<Typed, Error> {
    let misfit = |expected: &str| {
        Error::Elicitation(format!(
            "the answer {answer:?} to {:?} is not {expected}",
            field.name
        ))
    };
    let pick = |pairs: &[(String, String)], label: &str| {
        pairs
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| misfit("one of its options"))
    };
    let yes_no = || match answer {
        a if a.eq_ignore_ascii_case(YES) => Ok(true),
        a if a.eq_ignore_ascii_case(NO) => Ok(false),
        _ => Err(misfit("Yes or No")),
    };
    Ok(match &field.kind {
        Kind::Text => Typed::Value(ElicitationContentValue::String(answer.to_owned())),
        Kind::Integer => Typed::Value(ElicitationContentValue::Integer(
            answer.parse().map_err(|_| misfit("a whole number"))?,
        )),
        Kind::Number => {
            let n: f64 = answer.parse().map_err(|_| misfit("a number"))?;
            if !n.is_finite() {
                return Err(misfit("a finite number"));
            }
            Typed::Value(ElicitationContentValue::Number(n))
        }
        Kind::Boolean => Typed::Value(ElicitationContentValue::Boolean(yes_no()?)),
        Kind::Confirm => {
            if yes_no()? {
                Typed::Confirmed
            } else {
                Typed::Refused
            }
        }
        Kind::Choice(pairs) => Typed::Value(ElicitationContentValue::String(pick(pairs, answer)?)),
        Kind::Multi(pairs) => {
            let values = answer
                .split(", ")
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| pick(pairs, l))
                .collect::<Result<Vec<_>, _>>()?;
            Typed::Value(ElicitationContentValue::StringArray(values))
        }
    })
}

#[cfg(test)]
#[path = "elicit_tests.rs"]
mod tests;
