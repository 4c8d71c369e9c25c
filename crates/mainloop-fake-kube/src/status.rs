//! The API's `Status` objects (`kind: Status`, `apiVersion: v1`) for every failure the
//! fake answers, worded as the real apiserver words them, and the JSON responses.

use crate::Error;
use crate::resources::ResType;
use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A JSON response, `Content-Type: application/json` as the apiserver labels it.
pub(crate) fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `details` as the apiserver fills it: empty fields left out.
pub(crate) fn details(rt: Option<&ResType>, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if let Some(rt) = rt {
        if !rt.group.is_empty() {
            d.insert("group".into(), json!(rt.group));
        }
        d.insert("kind".into(), json!(rt.plural));
    }
    Value::Object(d)
}

/// One entry of an `Invalid` answer: the cause type, the field, and the message body.
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    pub kind: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            kind: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self {
            kind: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {detail}"),
        }
    }

    pub(crate) fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            kind: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }
}

impl Error {
    pub(crate) fn api(
        code: u16,
        reason: &str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        Self::Api {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details,
        }
    }

    pub(crate) fn not_found(rt: &ResType, name: &str) -> Self {
        Self::api(
            404,
            "NotFound",
            format!("{} {name:?} not found", rt.qualified()),
            Some(details(Some(rt), name)),
        )
    }

    /// A path the server does not serve.
    pub(crate) fn no_route() -> Self {
        Self::api(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    pub(crate) fn already_exists(rt: &ResType, name: &str) -> Self {
        Self::api(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", rt.qualified()),
            Some(details(Some(rt), name)),
        )
    }

    pub(crate) fn conflict(rt: &ResType, name: &str, why: &str) -> Self {
        Self::api(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                rt.qualified()
            ),
            Some(details(Some(rt), name)),
        )
    }

    /// The optimistic-concurrency failure of an update from a stale resourceVersion.
    pub(crate) fn stale(rt: &ResType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn forbidden(rt: &ResType, name: &str, why: &str) -> Self {
        let message = if name.is_empty() {
            format!("{} is forbidden: {why}", rt.qualified())
        } else {
            format!("{} {name:?} is forbidden: {why}", rt.qualified())
        };
        Self::api(403, "Forbidden", message, Some(details(Some(rt), name)))
    }

    /// What the NamespaceLifecycle admission answers a create in a terminating namespace.
    pub(crate) fn namespace_terminating(rt: &ResType, name: &str, namespace: &str) -> Self {
        let mut e = Self::forbidden(
            rt,
            name,
            &format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        );
        if let Self::Api {
            details: Some(d), ..
        } = &mut e
        {
            d["causes"] = json!([{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {namespace} is being terminated"),
                "field": "metadata.namespace",
            }]);
        }
        e
    }

    pub(crate) fn invalid(rt: &ResType, name: &str, causes: &[Cause]) -> Self {
        let listed: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = match listed.as_slice() {
            [] => String::new(),
            [one] => format!(": {one}"),
            many => format!(": [{}]", many.join(", ")),
        };
        let mut d = details(None, name);
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        d["kind"] = json!(rt.kind);
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.kind, "message": c.message, "field": c.field}))
            .collect();
        Self::api(
            422,
            "Invalid",
            format!("{} {name:?} is invalid{summary}", rt.qualified_kind()),
            Some(d),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::api(400, "BadRequest", message, None)
    }

    pub(crate) fn unsupported_media(content_type: &str) -> Self {
        Self::api(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
            None,
        )
    }

    pub(crate) fn method_not_allowed(rt: &ResType, action: &str) -> Self {
        Self::api(
            405,
            "MethodNotAllowed",
            format!(
                "{action} is not supported on resources of kind {:?}",
                rt.qualified()
            ),
            Some(details(Some(rt), "")),
        )
    }

    /// 410 `Expired`: a resourceVersion older than the retained history.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::api(410, "Expired", message, None)
    }

    /// A failure injected by the test, in the shape the real server gives that status.
    pub(crate) fn injected(code: u16) -> Self {
        match code {
            500 => Self::api(
                500,
                "InternalError",
                "Internal error occurred: injected fault",
                Some(json!({"causes": [{"message": "injected fault"}]})),
            ),
            503 => Self::unavailable(),
            429 => Self::api(
                429,
                "TooManyRequests",
                "Too many requests: injected fault",
                Some(json!({"retryAfterSeconds": 1})),
            ),
            504 => Self::api(
                504,
                "Timeout",
                "Timeout: injected fault",
                Some(json!({"retryAfterSeconds": 1})),
            ),
            409 => Self::api(409, "Conflict", "injected fault", None),
            403 => Self::api(403, "Forbidden", "forbidden: injected fault", None),
            code => Self::api(code, "InternalError", "injected fault", None),
        }
    }

    pub(crate) fn unavailable() -> Self {
        Self::api(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        )
    }

    /// The HTTP status this error is answered with.
    #[must_use]
    pub fn code(&self) -> u16 {
        match self {
            Self::Api { code, .. } => *code,
            Self::Io(_) => 500,
        }
    }

    /// The `Status` object this error is answered with.
    #[must_use]
    pub fn status(&self) -> Value {
        let (code, reason, message, details) = match self {
            Self::Api {
                code,
                reason,
                message,
                details,
            } => (*code, reason.as_str(), message.clone(), details.clone()),
            Self::Io(e) => (
                500,
                "InternalError",
                format!("Internal error occurred: {e}"),
                None,
            ),
        };
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if let Some(d) = details {
            s["details"] = d;
        }
        s
    }
}

/// The `Success` status a delete of an object that is gone at once answers with.
pub(crate) fn success(rt: &ResType, name: &str, uid: &str) -> Value {
    let mut d = details(Some(rt), name);
    d["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        let mut r = json_response(code, &self.status());
        if code == 429 {
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}
