//! Patch bodies by content type: JSON merge patch (RFC 7386), strategic merge patch
//! (treated as a merge patch: lists are replaced whole), JSON patch (RFC 6902) and
//! server-side apply (YAML or JSON; create-or-merge, without field ownership).

use crate::Error;
use serde_json::Value;

/// The kinds of patch the apiserver takes, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    pub(crate) fn from_content_type(ct: &str) -> Result<Self, Error> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(Error::unsupported_media(other)),
        }
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Parses a patch body: JSON, or YAML for apply.
pub(crate) fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, Error> {
    if kind == PatchKind::Apply {
        let text = std::str::from_utf8(body)
            .map_err(|e| Error::bad_request(format!("error decoding YAML: {e}")))?;
        return serde_yaml::from_str(text)
            .map_err(|e| Error::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("error decoding patch: {e}")))
}

fn pointer_parts(path: &str) -> Result<Vec<String>, Error> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| Error::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent<'a>(doc: &'a mut Value, parts: &[String]) -> Result<(&'a mut Value, String), Error> {
    let (last, init) = parts
        .split_last()
        .ok_or_else(|| Error::bad_request("cannot address the document root"))?;
    let mut cur = doc;
    for p in init {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| missing(p))?;
    }
    Ok((cur, last.clone()))
}

fn missing(p: &str) -> Error {
    Error::api(
        422,
        "Invalid",
        format!(
            "the server rejected our request due to an error in our request: path {p:?} is missing"
        ),
        None,
    )
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), Error> {
    let parts = pointer_parts(path)?;
    if parts.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (cont, last) = parent(doc, &parts)?;
    match cont {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) if last == "-" => {
            a.push(value);
            Ok(())
        }
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i <= a.len())
                .ok_or_else(|| missing(&last))?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing(&last)),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, Error> {
    let parts = pointer_parts(path)?;
    let (cont, last) = parent(doc, &parts)?;
    match cont {
        Value::Object(m) => m.remove(&last).ok_or_else(|| missing(&last)),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(|| missing(&last))?;
            Ok(a.remove(i))
        }
        _ => Err(missing(&last)),
    }
}

/// RFC 6902: `add`, `remove`, `replace`, `move`, `copy`, `test`.
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), Error> {
    let ops = ops
        .as_array()
        .ok_or_else(|| Error::bad_request("a JSON patch must be an array of operations"))?;
    for op in ops {
        let path = op["path"].as_str().unwrap_or("");
        match op["op"].as_str().unwrap_or("") {
            "add" => add(doc, path, op["value"].clone())?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, op["value"].clone())?;
            }
            "move" => {
                let v = remove(doc, op["from"].as_str().unwrap_or(""))?;
                add(doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(op["from"].as_str().unwrap_or(""))
                    .cloned()
                    .ok_or_else(|| missing(op["from"].as_str().unwrap_or("")))?;
                add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(Error::api(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: testing value {path} failed"
                        ),
                        None,
                    ));
                }
            }
            other => {
                return Err(Error::bad_request(format!(
                    "unexpected kind of JSON patch operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "test", "path": "/b/c", "value": 2},
                {"op": "remove", "path": "/a/0"},
            ]),
        )
        .unwrap();
        assert_eq!(t, json!({"a": [2, 3], "b": {"c": 2}}));
        assert!(json_patch(&mut t, &json!([{"op": "test", "path": "/b/c", "value": 9}])).is_err());
    }
}
