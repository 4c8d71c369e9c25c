//! `POST /graphql`: only the `markPullRequestReadyForReview` mutation; anything else
//! gets a GraphQL `errors` answer with status 200, as GitHub gives.

use crate::http::{Body, Login, json};
use crate::pulls;
use crate::state::Shared;
use axum::extract::{Extension, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub(crate) struct Request {
    #[serde(default)]
    query: String,
    #[serde(default)]
    variables: Option<Value>,
}

fn error(message: &str) -> Response {
    json(200, &json!({"errors": [{"message": message}]}))
}

/// The `pullRequestId` argument: a `$variable` or a string literal.
fn pull_request_id(query: &str, variables: Option<&Value>) -> Option<String> {
    let after = &query[query.find("markPullRequestReadyForReview")?..];
    let arg = &after[after.find("pullRequestId")? + "pullRequestId".len()..];
    let arg = arg.trim_start().strip_prefix(':')?.trim_start();
    if let Some(var) = arg.strip_prefix('$') {
        let name: String = var
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let v = variables?.get(&name)?;
        return v.as_str().map(str::to_owned);
    }
    let lit = arg.strip_prefix('"')?;
    Some(lit[..lit.find('"')?].to_owned())
}

pub(crate) async fn graphql(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Body(req): Body<Request>,
) -> Response {
    let q = req.query.trim_start();
    if q.is_empty() {
        return error("A query attribute must be specified and must be a string.");
    }
    if !q.starts_with("mutation") || !q.contains("markPullRequestReadyForReview") {
        return error("This fake GitHub only supports the markPullRequestReadyForReview mutation.");
    }
    let Some(id) = pull_request_id(q, req.variables.as_ref()) else {
        return error(
            "Argument 'pullRequestId' on InputObject 'MarkPullRequestReadyForReviewInput' is required.",
        );
    };
    match pulls::mark_ready(&s, &id, &login).await {
        Some((number, node_id)) => json(
            200,
            &json!({"data": {"markPullRequestReadyForReview": {
                "clientMutationId": null,
                "pullRequest": {"id": node_id, "isDraft": false, "number": number}
            }}}),
        ),
        None => json(
            200,
            &json!({
                "data": {"markPullRequestReadyForReview": null},
                "errors": [{
                    "type": "NOT_FOUND",
                    "path": ["markPullRequestReadyForReview"],
                    "message": format!("Could not resolve to a node with the global id of '{id}'"),
                }]
            }),
        ),
    }
}
