//! Object metadata as the apiserver keeps it: names (given or generated) and their
//! validation, label validation, and the server-set fields (`uid`,
//! `creationTimestamp`, `generation`, `resourceVersion`) on create and update.

use crate::Error;
use crate::resources::{NAMESPACES, ResType, TYPES};
use crate::status::Cause;
use rand::Rng;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, to the second, as RFC 3339 (`2025-01-02T03:04:05Z`), as the API writes times.
pub(crate) fn now() -> String {
    let t = OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Parses an RFC 3339 time the fake wrote.
pub(crate) fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Five characters as the apiserver's name generator draws them (no vowels, no
/// look-alikes).
pub(crate) fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_name)
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const KEY_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric))
}

fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_subdomain(p))
        && !name.is_empty()
        && is_label_value(name)
}

/// The name checks of a type: namespaces (and Jobs, whose name becomes a label value)
/// are RFC 1123 labels, everything else RFC 1123 subdomains.
pub(crate) fn check_name(rt: usize, name: &str) -> Option<Cause> {
    let label = rt == NAMESPACES || TYPES[rt].kind == "Job";
    let ok = if label {
        is_label_name(name)
    } else {
        is_subdomain(name)
    };
    (!ok).then(|| {
        Cause::invalid(
            "metadata.name",
            name,
            if label { LABEL_MSG } else { SUBDOMAIN_MSG },
        )
    })
}

/// Checks the labels of an object (and of a Job's pod template).
pub(crate) fn check_labels(labels: &Value, field: &str, causes: &mut Vec<Cause>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, v) in map {
        if !is_label_key(k) {
            causes.push(Cause::invalid(field, k, KEY_MSG));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            Some(s) => causes.push(Cause::invalid(field, s, VALUE_MSG)),
            None => causes.push(Cause::invalid(
                field,
                &v.to_string(),
                "label values must be strings",
            )),
        }
    }
}

/// Fills in the server-set metadata of a new object: the name from `generateName`,
/// the namespace from the URL, `uid`, `creationTimestamp`, `generation`, and the
/// `apiVersion`/`kind` of its type. Checks what the body says against the URL.
pub(crate) fn prepare_new(rt: usize, ns: &str, obj: &mut Value) -> Result<(), Error> {
    let t: &ResType = &TYPES[rt];
    check_types(t, obj)?;
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if obj["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
    {
        // What etcd3's store answers, as a 500.
        return Err(Error::api(
            500,
            "InternalError",
            "resourceVersion should not be set on objects to be created",
            None,
        ));
    }
    let meta = &mut obj["metadata"];
    if let Some(body_ns) = meta["namespace"].as_str()
        && t.namespaced
        && body_ns != ns
    {
        return Err(Error::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if t.namespaced {
        meta["namespace"] = json!(ns);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    let name = meta["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        match meta["generateName"].as_str() {
            Some(g) if !g.is_empty() => meta["name"] = json!(format!("{g}{}", suffix())),
            _ => {
                return Err(Error::invalid(
                    t,
                    "",
                    &[Cause::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
        }
    }
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    Ok(())
}

/// `apiVersion` and `kind` in a body must be its type's, when given; they are filled
/// in when not.
pub(crate) fn check_types(t: &ResType, obj: &mut Value) -> Result<(), Error> {
    if !obj.is_object() {
        return Err(Error::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    let av = t.api_version();
    match obj["apiVersion"].as_str() {
        Some(v) if v != av => {
            return Err(Error::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({av})"
            )));
        }
        _ => obj["apiVersion"] = json!(av),
    }
    match obj["kind"].as_str() {
        Some(k) if k != t.kind => {
            return Err(Error::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.kind
            )));
        }
        _ => obj["kind"] = json!(t.kind),
    }
    Ok(())
}

/// Carries the server-set metadata of the stored object into its replacement, and
/// bumps `generation` when anything outside metadata and status changed.
pub(crate) fn carry_over(old: &Value, new: &mut Value) {
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for k in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    let generation = if strip(old) == strip(new) {
        generation
    } else {
        generation + 1
    };
    new["metadata"]["generation"] = json!(generation);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(is_label_name("task-1"));
        assert!(!is_label_name("Task-1"));
        assert!(!is_label_name("-a"));
        assert!(is_subdomain("a.b-c"));
        assert!(is_label_value("Ab_c.1"));
        assert!(!is_label_value("a b"));
        assert!(is_label_key("mainloop.dev/task"));
        assert!(!is_label_key("/x"));
        assert_eq!(suffix().len(), 5);
    }
}
