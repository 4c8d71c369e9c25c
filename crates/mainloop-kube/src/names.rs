//! The names and labels the launcher gives what it makes, and the checks on names it is
//! handed (a run's, a credential's) before anything is sent.

use k8s_openapi::api::core::v1::Namespace;
use mainloop_domain::TaskId;
use mainloop_launch::LaunchError;
use std::collections::BTreeMap;

/// Every object the launcher makes carries `app.kubernetes.io/managed-by=mainloop`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "mainloop";
/// The task's id (a UUID, 36 characters).
pub const TASK_LABEL: &str = "mainloop.dev/task";
/// The run's name, on its Job and pod.
pub const RUN_LABEL: &str = "mainloop.dev/run";
/// The Secret, NetworkPolicy, ResourceQuota and LimitRange in a task's namespace, and
/// the Job's container.
pub const RUNNER: &str = "runner";
/// The runner's data directory in the pod (an `emptyDir`).
pub const DATA_DIR: &str = "/var/lib/mainloop-runner";
/// The variable the runner reads its token from.
pub const TOKEN_VAR: &str = "MAINLOOP_RUNNER_TOKEN";
/// The agent image's user and group.
pub const RUNNER_UID: i64 = 10001;
/// The label the Job controller puts on its pods.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The task's CloudNativePG `Cluster` and the NetworkPolicy fencing its pods in.
pub const DATABASE: &str = "database";
/// The Secret CloudNativePG makes for the Cluster's owner (`<cluster>-app`), its
/// connection URL under [`DATABASE_URI_KEY`].
pub const DATABASE_SECRET: &str = "database-app";
pub const DATABASE_URI_KEY: &str = "uri";
/// The label CloudNativePG puts on every pod of a Cluster, its name the value.
pub const CNPG_CLUSTER: &str = "cnpg.io/cluster";
/// PostgreSQL's port on the database's pods.
pub const POSTGRES_PORT: u16 = 5432;
/// The instance manager's port (status, backups), which the operator calls.
pub const INSTANCE_MANAGER_PORT: u16 = 8000;
/// A namespace name is at most 63 characters; the task's part takes 32.
pub const MAX_PREFIX: usize = 63 - 32;
/// A run's name, as the port promises it.
const MAX_RUN: usize = 40;

/// The task's namespace: the prefix and the task id's 32 hex digits (the whole id, so
/// two tasks never share one, and an RFC 1123 label of at most 63 characters).
#[must_use]
pub fn namespace(prefix: &str, task: TaskId) -> String {
    format!("{prefix}{}", task.0.simple())
}

/// The labels of everything made for the task.
#[must_use]
pub fn task_labels(task: TaskId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (TASK_LABEL.to_owned(), task.to_string()),
    ])
}

/// The labels every runner pod of the task carries (a Job's pod template has the task's
/// labels and `mainloop.dev/run`): the task's labels, and [`RUN_LABEL`] present.
/// What CloudNativePG runs in the namespace has none of them.
#[must_use]
pub fn runner_pods(task: TaskId) -> String {
    let mut selector: Vec<String> = task_labels(task)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    selector.push(RUN_LABEL.to_owned());
    selector.join(",")
}

/// The selector for the launcher's namespaces.
#[must_use]
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER},{TASK_LABEL}")
}

/// The task a namespace was made for, when it is one of this launcher's: labelled as
/// ours, with a task id whose namespace (under `prefix`) is this one's name.
#[must_use]
pub fn task_of(ns: &Namespace, prefix: &str) -> Option<TaskId> {
    let labels = ns.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGER) {
        return None;
    }
    let task: TaskId = labels.get(TASK_LABEL)?.parse().ok()?;
    (ns.metadata.name.as_deref() == Some(namespace(prefix, task).as_str())).then_some(task)
}

/// A run's name is a Job's: lowercase letters, digits and `-`, starting and ending with
/// a letter or digit, at most 40 characters.
///
/// # Errors
/// `Refused`, saying why.
pub fn check_run(run: &str) -> Result<(), LaunchError> {
    let ok = !run.is_empty()
        && run.len() <= MAX_RUN
        && run
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !run.starts_with('-')
        && !run.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(LaunchError::Refused(format!(
            "the run name {run:?} is not lowercase letters, digits and '-' (at most {MAX_RUN})"
        )))
    }
}

/// A credential is an environment variable of the runner: a name of capitals, digits and
/// `_` not starting with a digit, and not `MAINLOOP_*` (the runner reads those as its
/// configuration; the token is added by the launcher).
///
/// # Errors
/// `Refused`, naming the variable.
pub fn check_credential(name: &str) -> Result<(), LaunchError> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with("MAINLOOP_");
    if ok {
        Ok(())
    } else {
        Err(LaunchError::Refused(format!(
            "the credential {name:?} is not a variable name the runner can be given \
             (capitals, digits and '_', not MAINLOOP_*)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn a_namespace_is_a_label_and_names_its_task() {
        let task: TaskId = "0190f3a2-7b1c-7d4e-8f00-123456789abc".parse().unwrap();
        let name = namespace("mainloop-task-", task);
        assert_eq!(name, "mainloop-task-0190f3a27b1c7d4e8f00123456789abc");
        assert!(namespace(&"p".repeat(MAX_PREFIX), task).len() <= 63);
        let ns = |name: &str, labels: BTreeMap<String, String>| Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        assert_eq!(
            task_of(&ns(&name, task_labels(task)), "mainloop-task-"),
            Some(task)
        );
        // Another prefix's, someone else's, or a label that is not a task id.
        assert_eq!(task_of(&ns(&name, task_labels(task)), "other-"), None);
        let mut theirs = task_labels(task);
        theirs.insert(MANAGED_BY.to_owned(), "helm".to_owned());
        assert_eq!(task_of(&ns(&name, theirs), "mainloop-task-"), None);
        let mut odd = task_labels(task);
        odd.insert(TASK_LABEL.to_owned(), "nope".to_owned());
        assert_eq!(task_of(&ns(&name, odd), "mainloop-task-"), None);
    }

    #[test]
    fn run_and_credential_names() {
        for ok in ["run-1", "a", "0", &"r".repeat(40)] {
            assert!(check_run(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Run", "a_b", "a.b", &"r".repeat(41)] {
            assert!(check_run(bad).is_err(), "{bad}");
        }
        for ok in ["ANTHROPIC_API_KEY", "_X", "GH2"] {
            assert!(check_credential(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2X",
            "lower",
            "A-B",
            "MAINLOOP_RUNNER_TOKEN",
            "MAINLOOP_X",
        ] {
            assert!(check_credential(bad).is_err(), "{bad}");
        }
    }
}
