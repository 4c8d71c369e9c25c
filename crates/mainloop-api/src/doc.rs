//! What the OpenAPI document says beyond what the handlers' annotations derive: the
//! NUL rule on every request string, the payload of every server-sent event, the links
//! from operations that create things to the ones that use their ids, and parameter
//! and body constraints the derive cannot spell. Applied to the derived document as
//! JSON, so the served document and the web app's snapshot are the same text.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// No request string may hold a NUL character ([`crate::extract::ApiJson`] refuses it).
pub const NO_NUL: &str = "^[^\\u0000]*$";

/// Each server-sent event's name, the schema of its `data:` and what it means.
pub const SERVER_EVENTS: [(&str, &str, &str); 8] = [
    (
        "chat.delta",
        "ChatDelta",
        "A piece of an assistant reply as it streams",
    ),
    (
        "chat.message",
        "ChatMessage",
        "A complete stored message (user, assistant or event)",
    ),
    ("task.updated", "Task", "A task was created or changed"),
    (
        "inbox.updated",
        "InboxItem",
        "An inbox item was created, read or resolved",
    ),
    (
        "task.output",
        "TranscriptRecord",
        "A worker recorded a transcript entry (the same record `GET /api/tasks/{id}/transcript` returns)",
    ),
    ("chat.error", "ChatError", "A chat turn failed"),
    (
        "usage.updated",
        "UsageUpdated",
        "The user paused or resumed work, or changed the budgets",
    ),
    (
        "notes.updated",
        "NoteList",
        "The user's notes changed (added, edited, deleted, remembered or folded): all of them",
    ),
];

/// Applies the refinements to the derived document.
pub fn refine(doc: &mut Value) {
    parameters_without_null(doc);
    forbid_nul_in_requests(doc);
    body_rules(doc);
    server_events(doc);
    links(doc);
}

/// States the configured chat limit (`limits.max_chat_chars`) in `PostChat`.
pub fn set_max_chat_chars(doc: &mut Value, max: usize) {
    if let Some(text) = doc.pointer_mut("/components/schemas/PostChat/properties/text") {
        text["maxLength"] = json!(max);
    }
}

fn operations(doc: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    doc.get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut)
}

/// An absent query or header parameter is how a client says "none": it cannot send a
/// `null`, so the parameter's type is the value's alone.
fn parameters_without_null(doc: &mut Value) {
    for op in operations(doc) {
        let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
            continue;
        };
        for p in params {
            if let Some(Value::Array(types)) = p.pointer_mut("/schema/type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    p["schema"]["type"] = only;
                }
            }
        }
    }
}

/// Every string a request body carries (values and map keys) matches [`NO_NUL`] unless
/// its own pattern already excludes NUL.
fn forbid_nul_in_requests(doc: &mut Value) {
    let mut refs = BTreeSet::new();
    for op in operations(doc) {
        if let Some(content) = op.get("requestBody").and_then(|b| b.get("content")) {
            collect_refs(content, &mut refs);
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(name) = refs.pop_first() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let pointer = format!("/components/schemas/{name}");
        if let Some(schema) = doc.pointer_mut(&pointer) {
            collect_refs(schema, &mut refs);
            no_nul(schema);
        }
    }
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                out.insert(name.to_owned());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn no_nul(schema: &mut Value) {
    let Some(m) = schema.as_object_mut() else {
        return;
    };
    let is_string = match m.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    };
    let free_text = !m.contains_key("enum") && !m.contains_key("format");
    if is_string && free_text && !m.contains_key("pattern") {
        m.insert("pattern".into(), NO_NUL.into());
    }
    for key in ["properties", "$defs"] {
        if let Some(Value::Object(props)) = m.get_mut(key) {
            props.values_mut().for_each(no_nul);
        }
    }
    for key in ["items", "additionalProperties", "propertyNames", "not"] {
        if let Some(sub) = m.get_mut(key) {
            no_nul(sub);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(subs)) = m.get_mut(key) {
            subs.iter_mut().for_each(no_nul);
        }
    }
}

/// Rules on request bodies that span fields or alternatives.
fn body_rules(doc: &mut Value) {
    let prose = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$";
    for (schema, action) in [("PlanRequest", "revise"), ("ReviewRequest", "changes")] {
        if let Some(s) = doc
            .pointer_mut(&format!("/components/schemas/{schema}"))
            .and_then(Value::as_object_mut)
        {
            s.insert(
                "if".into(),
                json!({"properties": {"action": {"const": action}}, "required": ["action"]}),
            );
            s.insert(
                "then".into(),
                json!({"required": ["feedback"],
                       "properties": {"feedback": {"type": "string", "pattern": prose}}}),
            );
        }
    }
    if let Some(agents) = doc.pointer_mut("/components/schemas/Budgets/properties/agents") {
        agents["propertyNames"] = json!({"type": "string", "pattern": "^[a-z0-9-]{1,32}$"});
    }
    // `mainloop_domain::runner::is_label`.
    if let Some(labels) =
        doc.pointer_mut("/components/schemas/CreateTaskRequest/properties/runner_labels")
    {
        labels["items"] = json!({"type": "string", "pattern": "^[a-z0-9._-]{1,63}$"});
    }
    // `Zone::parse` trims the name and takes at most 64 bytes of it.
    if let Some(zone) = doc.pointer_mut("/components/schemas/SetTimeZone/properties/time_zone") {
        zone["minLength"] = json!(1);
        zone["maxLength"] = json!(64);
        zone["pattern"] = prose.into();
    }
    if let Some(endpoint) =
        doc.pointer_mut("/components/schemas/RegisterPushRequest/properties/endpoint")
    {
        endpoint["format"] = "uri".into();
    }
    if let Some(url) = doc.pointer_mut("/components/schemas/NtfyRequest/properties/url") {
        let description = url.get("description").cloned().unwrap_or_default();
        *url = json!({
            "description": description,
            "anyOf": [
                {"type": "null"},
                {"type": "string", "maxLength": 0},
                {"type": "string", "format": "uri", "maxLength": 2048,
                 "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+(?:[/?#]\\S*)?$"},
            ],
        });
    }
}

/// The `data:` of each server-sent event, as `ServerEvent` (one message: `id`, `event`
/// and its `data`, JSON text whose `contentSchema` is the payload's) and `EventData`
/// (event name to payload schema, for clients that listen by name and parse `data`).
fn server_events(doc: &mut Value) {
    let schema_ref = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let variants: Vec<Value> = SERVER_EVENTS
        .iter()
        .map(|(event, schema, what)| {
            json!({
                "type": "object",
                "description": format!("`{event}`: {what}."),
                "required": ["id", "event", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$",
                           "description": "The event-log id (send it back as `Last-Event-ID`)."},
                    "event": {"type": "string", "enum": [event]},
                    "data": {"type": "string", "contentMediaType": "application/json",
                             "contentSchema": schema_ref(schema),
                             "description": format!("JSON: a `{schema}`.")},
                },
            })
        })
        .collect();
    let by_name: Map<String, Value> = SERVER_EVENTS
        .iter()
        .map(|(event, schema, _)| ((*event).to_owned(), schema_ref(schema)))
        .collect();
    let names: Vec<&str> = SERVER_EVENTS.iter().map(|(e, _, _)| *e).collect();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert(
            "ServerEvent".into(),
            json!({
                "description": "One message of `GET /api/events`: `id:`, `event:` and `data:` (JSON), by event name.",
                "oneOf": variants,
            }),
        );
        schemas.insert(
            "EventData".into(),
            json!({
                "type": "object",
                "description": "The JSON `data:` of each event of `GET /api/events`, by event name.",
                "required": names,
                "properties": by_name,
            }),
        );
    }
    let table: String = SERVER_EVENTS
        .iter()
        .map(|(event, schema, what)| format!("\n| `{event}` | `{schema}` | {what} |"))
        .collect();
    if let Some(op) = doc.pointer_mut("/paths/~1api~1events/get") {
        let description = op["description"].as_str().unwrap_or_default().to_owned();
        op["description"] =
            format!("{description}\n\n| `event:` | `data:` schema | when |\n|---|---|---|{table}")
                .into();
        if let Some(ok) = op.pointer_mut("/responses/200/content/text~1event-stream") {
            ok["schema"] = schema_ref("ServerEvent");
        }
    }
}

/// OpenAPI links from operations whose responses carry ids to the operations that take
/// them.
fn links(doc: &mut Value) {
    let task_ops = [
        ("get_task", "GetTask"),
        ("answer_task", "AnswerTask"),
        ("review_plan", "ReviewPlan"),
        ("review_work", "ReviewWork"),
        ("cancel_task", "CancelTask"),
        ("retry_task", "RetryTask"),
        ("task_transcript", "TaskTranscript"),
        ("task_diff", "TaskDiff"),
    ];
    let path_id = |pointer: &str| json!({"id": format!("$response.body#{pointer}")});
    let mut created = Vec::new();
    for (op, name) in task_ops {
        created.push(("/api/tasks", "post", "201", op, name, path_id("/id")));
        created.push(("/api/tasks", "get", "200", op, name, path_id("/tasks/0/id")));
    }
    created.extend([
        (
            "/api/tasks",
            "post",
            "201",
            "get_project",
            "GetProject",
            path_id("/project_id"),
        ),
        (
            "/api/projects",
            "get",
            "200",
            "get_project",
            "GetProject",
            path_id("/projects/0/id"),
        ),
        (
            "/api/inbox",
            "get",
            "200",
            "mark_inbox_read",
            "MarkInboxRead",
            path_id("/items/0/id"),
        ),
        (
            "/api/notifications/push",
            "post",
            "201",
            "delete_push_subscription",
            "DeletePushSubscription",
            path_id("/id"),
        ),
        (
            "/api/notifications",
            "get",
            "200",
            "delete_push_subscription",
            "DeletePushSubscription",
            path_id("/subscriptions/0/id"),
        ),
        (
            "/api/digests",
            "get",
            "200",
            "get_digest",
            "GetDigest",
            path_id("/digests/0/id"),
        ),
        (
            "/api/chat",
            "post",
            "202",
            "list_messages",
            "ListMessagesBefore",
            json!({"before": "$response.body#/message_id"}),
        ),
    ]);
    for (path, method, status, op, name, parameters) in created {
        let pointer = format!(
            "/paths/{}/{method}/responses/{status}",
            path.replace('/', "~1")
        );
        if let Some(response) = doc.pointer_mut(&pointer).and_then(Value::as_object_mut) {
            let links = response
                .entry("links")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(links) = links {
                links.insert(
                    name.to_owned(),
                    json!({"operationId": op, "parameters": parameters}),
                );
            }
        }
    }
}
