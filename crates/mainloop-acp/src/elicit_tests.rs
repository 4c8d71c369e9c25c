#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn request(message: &str, schema: &Value) -> Value {
    json!({"sessionId": "s1", "mode": "form", "message": message, "requestedSchema": schema})
}

fn answers(form: &Form, given: &[(&str, &str)]) -> ControlReply {
    let by_text = given
        .iter()
        .map(|(q, a)| ((*q).to_owned(), (*a).to_owned()))
        .collect();
    ControlReply::answers(&form.input, &by_text)
}

fn wire(r: &CreateElicitationResponse) -> Value {
    serde_json::to_value(r).unwrap()
}

fn labels(q: &AgentQuestion) -> Vec<&str> {
    q.options.iter().map(|o| o.label.as_str()).collect()
}

fn full_form() -> Form {
    form(&request(
        "Before I start",
        &json!({"type": "object", "properties": {
            "db": {"type": "string", "title": "Database", "oneOf": [
                {"const": "pg", "title": "PostgreSQL"}, {"const": "lite", "title": "SQLite"}]},
            "features": {"type": "array", "title": "Features",
                "items": {"type": "string", "enum": ["auth", "search", "billing"]}},
            "tests": {"type": "boolean", "description": "Write tests?"},
            "workers": {"type": "integer", "title": "How many workers"},
            "ratio": {"type": "number"},
            "name": {"type": "string", "enum": ["a", "b"]},
            "notes": {"type": "string", "description": "Anything else"}
        }, "required": ["db", "tests"]}),
    ))
    .unwrap()
}

#[test]
fn each_property_becomes_a_question_with_its_options() {
    let f = full_form();
    let by_name = |n: &str| {
        let i = f.fields.iter().position(|x| x.name == n).unwrap();
        (&f.fields[i], &f.questions[i])
    };
    let (db, q) = by_name("db");
    assert_eq!(q.question, "Database");
    assert_eq!(q.header, "Database");
    assert_eq!(labels(q), ["PostgreSQL", "SQLite"]);
    assert!(!q.multi_select && db.required);
    let (_, q) = by_name("features");
    assert_eq!(labels(q), ["auth", "search", "billing"]);
    assert!(q.multi_select);
    let (tests, q) = by_name("tests");
    assert_eq!(
        (q.question.as_str(), q.header.as_str()),
        ("Write tests?", "tests")
    );
    assert_eq!(labels(q), ["Yes", "No"]);
    assert!(tests.required);
    let (_, q) = by_name("ratio");
    assert_eq!(q.question, "ratio");
    assert!(q.options.is_empty());
    let (_, q) = by_name("name");
    assert_eq!(labels(q), ["a", "b"]);
    assert!(by_name("notes").1.options.is_empty());
    assert_eq!(f.input["message"], "Before I start");
    assert_eq!(f.input["properties"].as_array().unwrap().len(), 7);
}

#[test]
fn answers_come_back_typed_by_the_schema() {
    let f = full_form();
    let reply = answers(
        &f,
        &[
            ("Database", "SQLite"),
            ("Features", "auth, billing"),
            ("Write tests?", "Yes"),
            ("How many workers", "4"),
            ("ratio", "0.5"),
            ("Anything else", "keep it small"),
        ],
    );
    assert_eq!(
        wire(&response(&f.fields, &reply).unwrap()),
        json!({"action": "accept", "content": {
            "db": "lite", "features": ["auth", "billing"], "tests": true,
            "workers": 4, "ratio": 0.5, "notes": "keep it small"}})
    );
}

#[test]
fn answers_that_do_not_fit_are_errors() {
    let f = full_form();
    let base = [("Database", "SQLite"), ("Write tests?", "No")];
    for bad in [
        ("Database", "MySQL"),
        ("Features", "auth, payroll"),
        ("Write tests?", "maybe"),
        ("How many workers", "four"),
        ("How many workers", "1.5"),
        ("ratio", "NaN"),
        ("ratio", "inf"),
    ] {
        let mut given = base.to_vec();
        given.retain(|(q, _)| *q != bad.0);
        given.push(bad);
        let err = response(&f.fields, &answers(&f, &given)).unwrap_err();
        assert!(err.to_string().contains(bad.1), "{bad:?}: {err}");
    }
    let missing = response(&f.fields, &answers(&f, &[("Database", "SQLite")])).unwrap_err();
    assert!(missing.to_string().contains("\"tests\""), "{missing}");
}

#[test]
fn a_refusal_declines_and_an_interrupt_cancels() {
    let f = full_form();
    let deny = |interrupt| ControlReply::Deny {
        message: "no".into(),
        interrupt,
    };
    assert_eq!(
        wire(&response(&f.fields, &deny(false)).unwrap()),
        json!({"action": "decline"})
    );
    assert_eq!(
        wire(&response(&f.fields, &deny(true)).unwrap()),
        json!({"action": "cancel"})
    );
}

#[test]
fn a_single_property_is_qualified_by_the_message() {
    let f = form(&request(
        "Which database should the service use?",
        &json!({"type": "object", "properties": {
            "db": {"type": "string", "title": "Database", "enum": ["pg", "lite"]}}}),
    ))
    .unwrap();
    assert_eq!(
        f.questions[0].question,
        "Which database should the service use?\n\nDatabase"
    );
    let reply = answers(&f, &[(f.questions[0].question.as_str(), "pg")]);
    assert_eq!(
        wire(&response(&f.fields, &reply).unwrap()),
        json!({"action": "accept", "content": {"db": "pg"}})
    );
}

#[test]
fn a_form_without_fields_is_a_confirmation() {
    let f = form(&request("Delete the cache?", &json!({"type": "object"}))).unwrap();
    assert_eq!(f.questions[0].question, "Delete the cache?");
    let yes = answers(&f, &[("Delete the cache?", "Yes")]);
    assert_eq!(
        wire(&response(&f.fields, &yes).unwrap()),
        json!({"action": "accept", "content": {}})
    );
    let no = answers(&f, &[("Delete the cache?", "No")]);
    assert_eq!(
        wire(&response(&f.fields, &no).unwrap()),
        json!({"action": "decline"})
    );
}

#[test]
fn same_titles_get_distinct_questions_and_long_headers_are_cut() {
    let long = "A very long title that does not fit in a chip at all";
    let f = form(&request(
        "",
        &json!({"type": "object", "properties": {
            "a": {"type": "string", "title": long},
            "b": {"type": "string", "title": long}}}),
    ))
    .unwrap();
    assert_ne!(f.questions[0].question, f.questions[1].question);
    assert!(f.questions[0].header.chars().count() <= HEADER_CHARS);
    assert!(f.questions[0].header.ends_with('…'));
}

#[test]
fn what_cannot_be_asked_is_an_error() {
    let url = json!({"sessionId": "s1", "mode": "url", "message": "Log in",
        "elicitationId": "e1", "url": "https://example.com/login"});
    assert!(form(&url).unwrap_err().to_string().contains("URL-mode"));
    let nested = request(
        "x",
        &json!({"type": "object", "properties": {"o": {"type": "object"}}}),
    );
    assert!(form(&nested).unwrap_err().to_string().contains("\"o\""));
    for garbage in [
        json!(null),
        json!("form"),
        json!({"mode": "form"}),
        request("x", &json!("not a schema")),
        request(
            "x",
            &json!({"properties": {"p": {"type": "string", "enum": 7}}}),
        ),
        json!({"sessionId": "s1", "mode": "telepathy", "message": "x"}),
    ] {
        assert!(form(&garbage).is_err(), "{garbage}");
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "string", "number", "integer", "boolean", "array", "object", "form", "url", "enum",
            "oneOf", "Yes", "",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "type",
                    "title",
                    "description",
                    "enum",
                    "oneOf",
                    "const",
                    "items",
                    "anyOf",
                    "properties",
                    "required",
                    "mode",
                    "message",
                    "sessionId",
                    "requestedSchema",
                ])
                .prop_map(str::to_owned),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Whatever schema the agent sends and whatever the host answers, translating
    /// never panics, and an accepted response only names the form's properties.
    #[test]
    fn arbitrary_schemas_and_answers_never_panic(
        schema in arbitrary_json(),
        message in ".{0,20}",
        texts in prop::collection::vec(".{0,16}", 0..6),
        interrupt in prop::option::of(any::<bool>()),
    ) {
        let params = request(&message, &schema);
        if let Ok(f) = form(&params) {
            let given: Vec<(&str, &str)> = f
                .questions
                .iter()
                .zip(texts.iter().cycle())
                .map(|(q, t)| (q.question.as_str(), t.as_str()))
                .collect();
            let reply = match interrupt {
                None => answers(&f, &given),
                Some(interrupt) => ControlReply::Deny { message: String::new(), interrupt },
            };
            if let Ok(r) = response(&f.fields, &reply)
                && let ElicitationAction::Accept(accept) = r.action
            {
                for name in accept.content.unwrap_or_default().keys() {
                    prop_assert!(f.fields.iter().any(|x| &x.name == name));
                }
            }
        }
    }

    /// A chosen option always maps back to its declared value.
    #[test]
    fn chosen_labels_map_back_to_their_values(
        values in prop::collection::btree_set("[a-z]{1,6}", 1..5),
        pick in any::<prop::sample::Index>(),
    ) {
        let values: Vec<String> = values.into_iter().collect();
        let f = form(&request("", &json!({"type": "object", "properties": {
            "p": {"type": "string", "enum": values}}}))).unwrap();
        let chosen = pick.get(&values);
        let reply = answers(&f, &[(f.questions[0].question.as_str(), chosen.as_str())]);
        prop_assert_eq!(
            wire(&response(&f.fields, &reply).unwrap()),
            json!({"action": "accept", "content": {"p": chosen}})
        );
    }
}
