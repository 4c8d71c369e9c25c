//! The API surface: parses `/api/v1/...` and `/apis/{group}/{version}/...` paths into a
//! resource, namespace, name and subresource, names the request's RBAC verb, applies the
//! injected faults, serves discovery, dispatches the verbs (get, list with selectors and
//! paging, watch, create, update, patch, delete, deletecollection), and logs the request.

use crate::Error;
use crate::faults::{RequestRecord, ResourcePath, resource_path};
use crate::ops::DeleteOpts;
use crate::patch::{self, PatchKind};
use crate::resources::{self, Served, TYPES};
use crate::select::Selector;
use crate::state::{Shared, State};
use crate::status::json_response;
use crate::store::Key;
use crate::watch;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State as AxState};
use axum::http::Method;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::sync::Arc;

/// The largest request body taken (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a path names.
#[derive(Debug, Clone)]
enum Route {
    /// A discovery document (or `None`: a discovery path serving nothing).
    Discovery(Option<Value>),
    Resource(Target),
}

#[derive(Debug, Clone)]
struct Target {
    rt: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str, server: &str, aggregated: bool, served: Served) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Discovery(Some(resources::version()))),
        ["api"] if aggregated => {
            return Some(Route::Discovery(Some(resources::aggregated(served, true))));
        }
        ["api"] => return Some(Route::Discovery(Some(resources::core_versions(server)))),
        ["apis"] if aggregated => {
            return Some(Route::Discovery(Some(resources::aggregated(served, false))));
        }
        ["apis"] => return Some(Route::Discovery(Some(resources::group_list(served)))),
        ["apis", g] => return Some(Route::Discovery(resources::group(served, g))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return Some(Route::Discovery(resources::resource_list(
            served, group, version,
        )));
    }
    let own = |s: Option<&&str>| s.map(|s| (*s).to_owned());
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(rt) =
            resources::find(served, group, version, plural).filter(|rt| TYPES[*rt].namespaced)
    {
        if tail.len() > 2 {
            return None;
        }
        return Some(Route::Resource(Target {
            rt,
            ns: Some((*ns).to_owned()),
            name: own(tail.first()),
            sub: own(tail.get(1)),
        }));
    }
    let (plural, tail) = rest.split_first()?;
    let rt = resources::find(served, group, version, plural)?;
    if tail.len() > 2 || (TYPES[rt].namespaced && !tail.is_empty()) {
        return None;
    }
    Some(Route::Resource(Target {
        rt,
        ns: None,
        name: own(tail.first()),
        sub: own(tail.get(1)),
    }))
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn qget<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn verb_of(method: &Method, t: Option<&ResourcePath>, q: &[(String, String)]) -> String {
    let named = t.is_some_and(|t| t.name.is_some());
    let v = match *method {
        Method::GET if named => "get",
        Method::GET if t.is_some() && matches!(qget(q, "watch"), Some("true" | "1")) => "watch",
        Method::GET if t.is_some() => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return method.as_str().to_ascii_lowercase(),
    };
    v.to_owned()
}

/// Every request that is not a control request comes here.
pub(crate) async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let q = query_pairs(&query);
    let accept = parts
        .headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let aggregated = accept.contains("as=APIGroupDiscoveryList");
    let route = parse_path(
        &path,
        shared.opts.base_url.trim_start_matches("http://"),
        aggregated,
        shared.opts.served,
    );
    let rbac = match &route {
        Some(Route::Resource(t)) => Some(ResourcePath {
            group: TYPES[t.rt].group.to_owned(),
            resource: TYPES[t.rt].plural.to_owned(),
            sub: t.sub.clone(),
            ns: t.ns.clone(),
            name: t.name.clone(),
        }),
        Some(Route::Discovery(_)) => None,
        None => resource_path(&path),
    };
    let verb = verb_of(&parts.method, rbac.as_ref(), &q);
    let injected = shared.with(|st| st.faults.take(parts.method.as_str(), &path, &verb));
    let response = match injected {
        Some(code) => Error::injected(code).into_response(),
        None => {
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            serve(&shared, &parts.method, route, &q, &content_type, body)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
    };
    let record = RequestRecord {
        method: parts.method.as_str().to_owned(),
        path,
        query,
        status: response.status().as_u16(),
        verb,
        group: rbac.as_ref().map(|r| r.group.clone()),
        resource: rbac.as_ref().map(|r| r.resource.clone()),
        subresource: rbac.as_ref().and_then(|r| r.sub.clone()),
        namespace: rbac.as_ref().and_then(|r| r.ns.clone()),
        name: rbac.and_then(|r| r.name),
    };
    shared.with(|st| st.log.push(record));
    response
}

async fn read_body(body: Body) -> Result<Vec<u8>, Error> {
    to_bytes(body, MAX_BODY)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| {
            Error::api(
                413,
                "RequestEntityTooLarge",
                format!("Request entity too large: {e}"),
                None,
            )
        })
}

fn parse_json(bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::bad_request(format!("error decoding the request body: {e}")))
}

fn dry_run(q: &[(String, String)]) -> bool {
    qget(q, "dryRun").is_some_and(|v| !v.is_empty())
}

async fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    route: Option<Route>,
    q: &[(String, String)],
    content_type: &str,
    body: Body,
) -> Result<Response, Error> {
    let t = match route {
        None | Some(Route::Discovery(None)) => return Err(Error::no_route()),
        Some(Route::Discovery(Some(doc))) if *method == Method::GET => {
            return Ok(json_response(200, &doc));
        }
        Some(Route::Discovery(Some(_))) => {
            return Err(Error::api(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ));
        }
        Some(Route::Resource(t)) => t,
    };
    let rt = t.rt;
    let ty = &TYPES[rt];
    let status_sub = match t.sub.as_deref() {
        None => false,
        Some("status") if ty.status => true,
        Some(_) => return Err(Error::no_route()),
    };
    let ns = t.ns.clone().unwrap_or_default();
    let collection_ok = !ty.namespaced || t.ns.is_some();
    match (method.clone(), t.name) {
        (Method::GET, Some(name)) => {
            let obj = shared.read(|st| st.store.get(&Key::new(rt, &ns, &name)).cloned());
            obj.map(|o| json_response(200, &o))
                .ok_or_else(|| Error::not_found(ty, &name))
        }
        (Method::GET, None) if matches!(qget(q, "watch"), Some("true" | "1")) => {
            watch::watch(shared, rt, t.ns, q)
        }
        (Method::GET, None) => shared
            .read(|st| list(st, rt, t.ns.as_deref(), q))
            .map(|v| json_response(200, &v)),
        (Method::POST, None) if collection_ok => {
            let obj = parse_json(&read_body(body).await?)?;
            let created = shared.with(|st| st.create(rt, &ns, obj, dry_run(q)))?;
            Ok(json_response(201, &created))
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_json(&read_body(body).await?)?;
            let stored =
                shared.with(|st| st.replace(rt, &ns, &name, obj, status_sub, dry_run(q)))?;
            Ok(json_response(200, &stored))
        }
        (Method::PATCH, Some(name)) => {
            let kind = PatchKind::from_content_type(content_type)?;
            if kind == PatchKind::Apply && qget(q, "fieldManager").is_none_or(str::is_empty) {
                return Err(Error::bad_request(
                    "PATCH, apply requests require a fieldManager",
                ));
            }
            let p = patch::parse_body(kind, &read_body(body).await?)?;
            let (obj, created) =
                shared.with(|st| st.patch(rt, &ns, &name, kind, &p, status_sub, dry_run(q)))?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        (Method::DELETE, Some(name)) if !status_sub => {
            let opts = delete_opts(&read_body(body).await?, q)?;
            let out = shared.with(|st| st.delete(rt, &ns, &name, &opts))?;
            Ok(json_response(200, &out))
        }
        (Method::DELETE, None) if collection_ok => {
            let opts = delete_opts(&read_body(body).await?, q)?;
            let out = shared.with(|st| delete_collection(st, rt, t.ns.as_deref(), q, &opts))?;
            Ok(json_response(200, &out))
        }
        (m, _) => Err(Error::method_not_allowed(ty, m.as_str())),
    }
}

/// `DeleteOptions` from the body (kube-rs) or the query (`propagationPolicy`, `dryRun`).
fn delete_opts(body: &[u8], q: &[(String, String)]) -> Result<DeleteOpts, Error> {
    let mut opts: DeleteOpts = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOpts::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    if let Some(p) = qget(q, "propagationPolicy") {
        opts.propagation_policy = Some(p.to_owned());
    }
    if dry_run(q) {
        opts.dry_run = Some(vec!["All".to_owned()]);
    }
    Ok(opts)
}

/// A list item: as the apiserver writes typed lists, without `apiVersion`/`kind`.
fn item(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn list(st: &State, rt: usize, ns: Option<&str>, q: &[(String, String)]) -> Result<Value, Error> {
    let t = &TYPES[rt];
    let selector = Selector::from_query(q, rt)?;
    let mut list_rv = st.store.rv();
    if qget(q, "resourceVersionMatch") == Some("Exact") {
        let want: u64 = qget(q, "resourceVersion")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if want < st.store.floor() {
            return Err(Error::expired(
                "The resourceVersion for the provided list is too old.",
            ));
        }
    }
    let mut after: Option<(String, String)> = None;
    if let Some(token) = qget(q, "continue").filter(|s| !s.is_empty()) {
        let decoded = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or_else(|| Error::bad_request("continue key is not valid"))?;
        let rv = decoded["rv"].as_u64().unwrap_or(0);
        if rv < st.store.floor() {
            return Err(Error::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        list_rv = rv;
        after = Some((
            decoded["ns"].as_str().unwrap_or("").to_owned(),
            decoded["name"].as_str().unwrap_or("").to_owned(),
        ));
    }
    let matching: Vec<(&Key, &Value)> = st
        .store
        .list(rt, ns)
        .into_iter()
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ans, an)| (&k.ns, &k.name) > (ans, an))
        })
        .filter(|(_, o)| selector.matches(o))
        .collect();
    let limit = qget(q, "limit")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0);
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    let page: Vec<&(&Key, &Value)> = match limit {
        Some(n) if matching.len() > n => {
            let last = matching[n - 1].0;
            let token = json!({"rv": list_rv, "ns": last.ns, "name": last.name});
            meta["continue"] = json!(URL_SAFE_NO_PAD.encode(token.to_string()));
            meta["remainingItemCount"] = json!(matching.len() - n);
            matching.iter().take(n).collect()
        }
        _ => matching.iter().collect(),
    };
    Ok(json!({
        "kind": t.list_kind(),
        "apiVersion": t.api_version(),
        "metadata": meta,
        "items": page.iter().map(|(_, o)| item(o)).collect::<Vec<_>>(),
    }))
}

fn delete_collection(
    st: &mut State,
    rt: usize,
    ns: Option<&str>,
    q: &[(String, String)],
    opts: &DeleteOpts,
) -> Result<Value, Error> {
    let t = &TYPES[rt];
    let selector = Selector::from_query(q, rt)?;
    let keys: Vec<Key> = st
        .store
        .list(rt, ns)
        .into_iter()
        .filter(|(_, o)| selector.matches(o))
        .map(|(k, _)| k.clone())
        .collect();
    let mut items = Vec::new();
    for k in keys {
        let obj = st.store.get(&k).cloned();
        match st.delete(rt, &k.ns, &k.name, opts) {
            Ok(out) if out["kind"] == "Status" => items.extend(obj.as_ref().map(item)),
            Ok(out) => items.push(item(&out)),
            // A namespace already terminating stays in the answer, as it is.
            Err(_) => items.extend(obj.as_ref().map(item)),
        }
    }
    Ok(json!({
        "kind": t.list_kind(),
        "apiVersion": t.api_version(),
        "metadata": {"resourceVersion": st.store.rv().to_string()},
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (usize, Option<String>, Option<String>, Option<String>);

    fn target(path: &str) -> Option<Parsed> {
        let served = Served {
            cloudnativepg: true,
        };
        match parse_path(path, "x", false, served)? {
            Route::Resource(t) => Some((t.rt, t.ns, t.name, t.sub)),
            Route::Discovery(_) => None,
        }
    }

    #[test]
    fn paths() {
        let ns = resources::NAMESPACES;
        assert_eq!(target("/api/v1/namespaces"), Some((ns, None, None, None)));
        assert_eq!(
            target("/api/v1/namespaces/a"),
            Some((ns, None, Some("a".into()), None))
        );
        assert_eq!(
            target("/api/v1/namespaces/a/status"),
            Some((ns, None, Some("a".into()), Some("status".into())))
        );
        assert_eq!(
            target("/apis/batch/v1/namespaces/a/jobs/j/status"),
            Some((
                resources::JOBS,
                Some("a".into()),
                Some("j".into()),
                Some("status".into())
            ))
        );
        assert_eq!(
            target("/api/v1/pods"),
            Some((resources::PODS, None, None, None))
        );
        assert!(target("/api/v1/pods/x").is_none());
        assert!(target("/api/v1/widgets").is_none());
        assert_eq!(
            target("/apis/postgresql.cnpg.io/v1/namespaces/t/clusters/db"),
            Some((
                resources::CLUSTERS,
                Some("t".into()),
                Some("db".into()),
                None
            ))
        );
        assert!(
            parse_path(
                "/apis/postgresql.cnpg.io/v1/clusters",
                "x",
                false,
                Served::default()
            )
            .is_none()
        );
    }
}
