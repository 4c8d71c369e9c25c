//! Watches: a streaming response of newline-delimited `{"type","object"}` events —
//! synthetic ADDED for the current objects (no or `0` resourceVersion, or
//! `sendInitialEvents=true` ending with an `initial-events-end` BOOKMARK), replay from the
//! history after a given resourceVersion (an `ERROR` 410 `Expired` event when it is older
//! than the history), then live events filtered by namespace and selectors (an object
//! leaving a selector is a DELETED), periodic BOOKMARKs, and an end at `timeoutSeconds`,
//! on demand, or when the client falls too far behind.

use crate::Error;
use crate::resources::TYPES;
use crate::select::Selector;
use crate::state::Shared;
use crate::status::json_response;
use crate::store::{Event, EventType};
use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// When a request names no `timeoutSeconds` (the apiserver's `--min-request-timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Params {
    rt: usize,
    ns: Option<String>,
    selector: Selector,
    bookmarks: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(rt: usize, rv: u64, initial_end: bool) -> Bytes {
    let t = &TYPES[rt];
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": meta}),
    )
}

/// The line an event becomes for this watch, if it concerns it.
fn render(p: &Params, ev: &Event) -> Option<Bytes> {
    if ev.key.rt != p.rt || p.ns.as_deref().is_some_and(|ns| ev.key.ns != ns) {
        return None;
    }
    let now = p.selector.matches(&ev.object);
    let kind = match ev.kind {
        EventType::Modified => {
            let before = ev.prev.as_ref().is_some_and(|o| p.selector.matches(o));
            match (before, now) {
                (true, true) => EventType::Modified,
                (false, true) => EventType::Added,
                (true, false) => EventType::Deleted,
                (false, false) => return None,
            }
        }
        k if now => k,
        _ => return None,
    };
    Some(line(kind.wire(), &ev.object))
}

fn get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Counts open watches while alive.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts a watch of type `rt` in `ns` (all namespaces when `None`).
pub(crate) fn watch(
    shared: &Arc<Shared>,
    rt: usize,
    ns: Option<String>,
    q: &[(String, String)],
) -> Result<Response, Error> {
    let selector = Selector::from_query(q, rt)?;
    let bookmarks = matches!(get(q, "allowWatchBookmarks"), Some("true" | "1"));
    let initial = matches!(get(q, "sendInitialEvents"), Some("true" | "1"));
    let timeout = get(q, "timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let from: Option<u64> = match get(q, "resourceVersion").filter(|s| !s.is_empty() && *s != "0") {
        Some(s) if !initial => Some(
            s.parse()
                .map_err(|_| Error::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
        _ => None,
    };
    let p = Params {
        rt,
        ns,
        selector,
        bookmarks,
    };
    let (rx, mut first, last_rv, expired) = shared.read(|st| {
        let rx = st.store.subscribe();
        let mut first: Vec<Bytes> = Vec::new();
        let mut expired = false;
        let rv = st.store.rv();
        match from {
            None => {
                for (_, obj) in st.store.list(rt, p.ns.as_deref()) {
                    if p.selector.matches(obj) {
                        first.push(line("ADDED", obj));
                    }
                }
                if initial && bookmarks {
                    first.push(bookmark(rt, rv, true));
                }
            }
            Some(n) => match st.store.since(n) {
                Some(events) => first.extend(events.iter().filter_map(|e| render(&p, e))),
                None => {
                    let e = Error::expired(format!(
                        "too old resource version: {n} ({})",
                        st.store.floor()
                    ));
                    first.push(line("ERROR", &e.status()));
                    expired = true;
                }
            },
        }
        (rx, first, rv, expired)
    });
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let open = Open(shared.clone());
    let epoch = shared.watch_epoch.subscribe();
    let interval = shared.opts.bookmark_interval;
    tokio::spawn(async move {
        let _open = open;
        for b in first.drain(..) {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        if !expired {
            stream(p, rx, tx, epoch, last_rv, timeout, interval).await;
        }
    });
    let mut body_rx = body_rx;
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| body_rx.poll_recv(cx)));
    let mut r = json_response(200, &Value::Null);
    *r.body_mut() = body;
    Ok(r)
}

async fn stream(
    p: Params,
    mut rx: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut epoch: tokio::sync::watch::Receiver<u64>,
    mut last_rv: u64,
    timeout: Duration,
    interval: Duration,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
    tick.tick().await;
    loop {
        let out = tokio::select! {
            () = &mut deadline => return,
            _ = epoch.changed() => return,
            () = tx.closed() => return,
            _ = tick.tick(), if p.bookmarks => Some(bookmark(p.rt, last_rv, false)),
            r = rx.recv() => match r {
                Ok(ev) if ev.rv <= last_rv => None,
                Ok(ev) => {
                    last_rv = ev.rv;
                    render(&p, &ev)
                }
                // Fallen too far behind: end the watch; the client resumes.
                Err(_) => return,
            },
        };
        if let Some(b) = out
            && tx.send(Ok(b)).await.is_err()
        {
            return;
        }
    }
}
