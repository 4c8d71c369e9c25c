//! What each kind's registry strategy does on create and update: defaults (pods, the
//! pod template of Jobs, Jobs' selector and labels, namespaces, secrets' `stringData`),
//! the status reset of a create, and the validations a launcher could trip over
//! (names, labels, containers, Jobs' `restartPolicy`, secrets' base64, the schema of
//! CloudNativePG's Cluster).

use crate::Error;
use crate::cnpg;
use crate::meta::{check_labels, check_name};
use crate::resources::{CLUSTERS, JOBS, NAMESPACES, PODS, SECRETS, TYPES};
use crate::status::Cause;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// Defaults and checks a new object (its metadata already prepared).
pub(crate) fn on_create(rt: usize, obj: &mut Value) -> Result<(), Error> {
    let t = &TYPES[rt];
    if t.status {
        obj["status"] = json!({});
    }
    match rt {
        NAMESPACES => {
            let name = obj["metadata"]["name"].clone();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        PODS => {
            default_pod_spec(&mut obj["spec"]);
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        JOBS => default_job(obj),
        SECRETS => fold_string_data(obj),
        // A custom resource starts with no status at all; its operator writes one.
        CLUSTERS => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
    validate(rt, obj)
}

/// Applies what an update of the main resource keeps from the stored object (its
/// status, for types with a status subresource), defaults, and checks.
pub(crate) fn on_update(rt: usize, old: &Value, obj: &mut Value) -> Result<(), Error> {
    let t = &TYPES[rt];
    if t.status {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    match rt {
        NAMESPACES => {
            let name = obj["metadata"]["name"].clone();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            obj["spec"] = old["spec"].clone();
        }
        PODS => default_pod_spec(&mut obj["spec"]),
        JOBS => {
            default_job(obj);
            if obj["spec"]["selector"] != old["spec"]["selector"] {
                return Err(Error::invalid(
                    t,
                    obj["metadata"]["name"].as_str().unwrap_or(""),
                    &[Cause::invalid(
                        "spec.selector",
                        &obj["spec"]["selector"].to_string(),
                        "field is immutable",
                    )],
                ));
            }
        }
        SECRETS => fold_string_data(obj),
        _ => {}
    }
    validate(rt, obj)
}

/// A write to `/status`: only the status of the body is taken.
pub(crate) fn on_status_update(old: &Value, body: &Value) -> Value {
    let mut out = old.clone();
    match body.get("status") {
        Some(s) => out["status"] = s.clone(),
        None => {
            if let Some(m) = out.as_object_mut() {
                m.remove("status");
            }
        }
    }
    out
}

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj[key] = v;
    }
}

/// The defaults the apiserver gives a pod spec (and a pod template's spec).
fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    let sa = spec["serviceAccountName"]
        .as_str()
        .or_else(|| spec["serviceAccount"].as_str())
        .unwrap_or("default")
        .to_owned();
    spec["serviceAccountName"] = json!(sa);
    spec["serviceAccount"] = json!(sa);
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec[list].as_array_mut() {
            for c in cs {
                let image = c["image"].as_str().unwrap_or("");
                let tag = image
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .split_once(':')
                    .map(|(_, t)| t);
                let pull = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
                    "IfNotPresent"
                } else {
                    "Always"
                };
                set_default(c, "imagePullPolicy", json!(pull));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
            }
        }
    }
}

/// BestEffort, Burstable or Guaranteed, from the containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        let has = |v: &Value| v.as_object().is_some_and(|m| !m.is_empty());
        any |= has(req) || has(lim);
        for r in ["cpu", "memory"] {
            let l = lim.get(r);
            let q = req.get(r).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A Job's defaults: the generated selector and the labels that tie its pods to it
/// (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and the
/// legacy `controller-uid`, `job-name`), and the spec's counts and policies.
fn default_job(obj: &mut Value) {
    let name = obj["metadata"]["name"].clone();
    let uid = obj["metadata"]["uid"].clone();
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "completions", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    set_default(spec, "manualSelector", json!(false));
    if spec["manualSelector"] != json!(true) {
        set_default(
            spec,
            "selector",
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let labels = &mut spec["template"]["metadata"]["labels"];
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            set_default(labels, k, v.clone());
        }
    }
    default_pod_spec(&mut spec["template"]["spec"]);
}

/// Secrets: `stringData` is folded into `data` (base64) and dropped; `type` defaults
/// to `Opaque`.
fn fold_string_data(obj: &mut Value) {
    set_default(obj, "type", json!("Opaque"));
    let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        let s = v.as_str().unwrap_or_default();
        obj["data"][k] = json!(STANDARD.encode(s));
    }
}

fn validate(rt: usize, obj: &Value) -> Result<(), Error> {
    let t = &TYPES[rt];
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut causes: Vec<Cause> = check_name(rt, name).into_iter().collect();
    check_labels(&obj["metadata"]["labels"], "metadata.labels", &mut causes);
    match rt {
        PODS => check_pod_spec(&obj["spec"], "spec", &mut causes),
        JOBS => {
            let spec = &obj["spec"];
            check_labels(
                &spec["template"]["metadata"]["labels"],
                "spec.template.metadata.labels",
                &mut causes,
            );
            check_pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes);
            let rp = spec["template"]["spec"]["restartPolicy"]
                .as_str()
                .unwrap_or("Always");
            if rp != "Never" && rp != "OnFailure" {
                causes.push(Cause::not_supported(
                    "spec.template.spec.restartPolicy",
                    rp,
                    &["OnFailure", "Never"],
                ));
            }
            for f in [
                "parallelism",
                "completions",
                "backoffLimit",
                "activeDeadlineSeconds",
                "ttlSecondsAfterFinished",
            ] {
                if spec[f].as_i64().is_some_and(|n| n < 0) {
                    causes.push(Cause::invalid(
                        format!("spec.{f}"),
                        &spec[f].to_string(),
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        SECRETS => {
            if let Some(data) = obj["data"].as_object() {
                for (k, v) in data {
                    let ok = v.as_str().is_some_and(|s| STANDARD.decode(s).is_ok());
                    if !ok {
                        return Err(Error::bad_request(format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data.{k}"
                        )));
                    }
                }
            }
        }
        CLUSTERS => cnpg::check(obj, &mut causes),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(t, name, &causes))
    }
}

fn check_pod_spec(spec: &Value, field: &str, causes: &mut Vec<Cause>) {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        causes.push(Cause::required(format!("{field}.containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        if c["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("{field}.containers[{i}].name"), ""));
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(
                format!("{field}.containers[{i}].image"),
                "",
            ));
        }
    }
    let rp = spec["restartPolicy"].as_str().unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&rp) {
        causes.push(Cause::not_supported(
            format!("{field}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
}
