//! kube-rs's errors as the port's: what trying again later can cure (no answer, 5xx, 429,
//! a namespace still terminating) is `Unavailable`; what it cannot (403, 400, 422, a
//! client that cannot be built) is `Refused`. Each says what the launcher was doing.

use kube::core::Status;
use mainloop_launch::LaunchError;

/// The API's answer, when the call got one.
pub fn status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// The answer's HTTP code, when the call got one.
pub fn code(e: &kube::Error) -> Option<u16> {
    status(e).map(|s| s.code)
}

/// A create refused because its namespace is being deleted (NamespaceLifecycle's
/// answer: 403 with the cause `NamespaceTerminating`).
pub fn namespace_terminating(e: &kube::Error) -> bool {
    status(e).is_some_and(|s| {
        s.code == 403
            && (s
                .details
                .as_ref()
                .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
                || s.message.contains("because it is being terminated"))
    })
}

/// The port's error for a failed call; `doing` says what the call was ("creating the
/// Job run-1 in mainloop-task-…").
pub fn launch_error(doing: &str, e: &kube::Error) -> LaunchError {
    let Some(s) = status(e) else {
        return match e {
            // No answer (connection refused or cut, a timeout) or one that was not the
            // API's (a proxy's page cut short, a body that is not JSON): nothing is lost
            // by asking again.
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::SerdeError(_)
            | kube::Error::FromUtf8(_) => LaunchError::Unavailable(format!("{doing}: {e}")),
            // The client cannot make the request (its configuration, TLS, credentials).
            _ => LaunchError::Refused(format!("{doing}: {e}")),
        };
    };
    let what = format!("{doing}: {} ({} {})", s.message, s.code, s.reason);
    if namespace_terminating(e) {
        return LaunchError::Unavailable(what);
    }
    match s.code {
        // Busy, a timeout, a conflict with a concurrent write, a stale read, or a
        // status the client made up without a code: try again.
        408 | 409 | 410 | 429 | 0 => LaunchError::Unavailable(what),
        c if c >= 500 => LaunchError::Unavailable(what),
        // 400, 401, 403, 404, 405, 413, 415, 422, …: someone must change something.
        _ => LaunchError::Refused(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("no", reason).with_code(code).boxed())
    }

    fn unavailable(e: &kube::Error) -> bool {
        matches!(launch_error("x", e), LaunchError::Unavailable(_))
    }

    #[test]
    fn codes_map_to_retry_or_refusal() {
        for c in [500, 502, 503, 504, 429, 409, 408, 410] {
            assert!(unavailable(&api(c, "r")), "{c}");
        }
        for c in [400, 401, 403, 404, 405, 422] {
            assert!(!unavailable(&api(c, "r")), "{c}");
        }
        let terminating: Status = serde_json::from_value(serde_json::json!({
            "code": 403, "reason": "Forbidden", "message": "unable to create new content",
            "details": {"causes": [{"reason": "NamespaceTerminating"}]},
        }))
        .unwrap();
        let e = kube::Error::Api(terminating.boxed());
        assert!(namespace_terminating(&e) && unavailable(&e));
        let LaunchError::Refused(why) = launch_error("creating the Job r", &api(422, "Invalid"))
        else {
            panic!("422 is a refusal")
        };
        assert_eq!(why, "creating the Job r: no (422 Invalid)");
        assert!(!unavailable(&kube::Error::TlsRequired));
        let bad_json = serde_json::from_str::<u8>("{").unwrap_err();
        assert!(unavailable(&kube::Error::SerdeError(bad_json)));
    }
}
