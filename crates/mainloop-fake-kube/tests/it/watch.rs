//! Watches through kube-rs: raw watch events (ADDED/MODIFIED/DELETED/BOOKMARK, label
//! selectors), the runtime watcher following list+watch, re-listing after a 410, a
//! streaming list, and recovering across outages.

use crate::common::{client_without_retries, env, env_with, obj, within};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use mainloop_fake_kube::{Config, Outage};
use serde_json::json;
use std::pin::Pin;
use std::time::Duration;

type Events = Pin<Box<dyn Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Send>>;

/// The next event that is not an error, the errors seen on the way.
async fn next_ok(s: &mut Events) -> (Event<ConfigMap>, Vec<watcher::Error>) {
    let mut errors = Vec::new();
    loop {
        match within("a watcher event", s.next()).await.unwrap() {
            Ok(e) => return (e, errors),
            Err(e) => errors.push(e),
        }
    }
}

/// Consumes a full initial listing; the names listed.
async fn init(s: &mut Events) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        match next_ok(s).await.0 {
            Event::Init => {}
            Event::InitApply(o) => names.push(o.name_any()),
            Event::InitDone => return names,
            other => panic!("unexpected {other:?} during the initial list"),
        }
    }
}

async fn create_cm(api: &Api<ConfigMap>, name: &str) {
    api.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": name}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn raw_watch_events_and_bookmarks() {
    let e = env().await;
    e.namespace("w").await;
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "w");
    create_cm(&api, "a").await;
    let rv = api.get("a").await.unwrap().resource_version().unwrap();
    let wp = WatchParams::default().labels("app=x").timeout(30);
    let mut s = api.watch(&wp, &rv).await.unwrap().boxed();
    let mut next = async || loop {
        match within("a watch event", s.next()).await.unwrap().unwrap() {
            WatchEvent::Bookmark(b) => assert!(!b.metadata.resource_version.is_empty()),
            other => return other,
        }
    };
    // Labelled into the selector: ADDED; changed: MODIFIED; labelled out: DELETED.
    let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    api.patch("a", &PatchParams::default(), &label("x"))
        .await
        .unwrap();
    assert!(matches!(next().await, WatchEvent::Added(o) if o.name_any() == "a"));
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    assert!(matches!(next().await, WatchEvent::Modified(o) if o.data.is_some()));
    api.patch("a", &PatchParams::default(), &label("y"))
        .await
        .unwrap();
    assert!(matches!(next().await, WatchEvent::Deleted(_)));
    // Bookmarks come on their own, carrying the current resourceVersion.
    let mut s2 = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let bookmark = loop {
        if let WatchEvent::Bookmark(b) = within("a bookmark", s2.next()).await.unwrap().unwrap() {
            break b;
        }
    };
    assert_eq!(bookmark.types.kind, "ConfigMap");
    assert_eq!(
        bookmark.metadata.resource_version,
        e.fake.resource_version().to_string()
    );
    // A watch ends at its timeout.
    let mut short = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    while within("the watch to time out", short.next())
        .await
        .is_some()
    {}
}

#[tokio::test]
async fn watcher_lists_then_follows() {
    let e = env().await;
    e.namespace("f").await;
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "f");
    create_cm(&api, "before").await;
    let mut s: Events = watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(init(&mut s).await, ["before"]);
    create_cm(&api, "after").await;
    assert!(matches!(next_ok(&mut s).await.0, Event::Apply(o) if o.name_any() == "after"));
    api.delete("before", &Default::default()).await.unwrap();
    assert!(matches!(next_ok(&mut s).await.0, Event::Delete(o) if o.name_any() == "before"));
    let watches: Vec<_> = e
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.verb == "watch")
        .collect();
    assert!(
        watches[0].query.contains("allowWatchBookmarks=true"),
        "{:?}",
        watches[0]
    );
    // A watch closed by the server is resumed from where it was, without a re-list.
    e.fake.close_watches();
    create_cm(&api, "resumed").await;
    assert!(matches!(next_ok(&mut s).await.0, Event::Apply(o) if o.name_any() == "resumed"));
    assert_eq!(
        e.fake
            .requests()
            .iter()
            .filter(|r| r.verb == "list")
            .count(),
        1
    );
}

fn watcher(
    api: Api<ConfigMap>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Send {
    watcher::watcher(api, config)
}

#[tokio::test]
async fn watcher_relists_after_410() {
    // No bookmarks during the test, so the watcher's resourceVersion stays behind.
    let e = env_with(Config {
        bookmark_interval: Duration::from_secs(3600),
        ..Config::default()
    })
    .await;
    e.namespace("g").await;
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "g");
    create_cm(&api, "one").await;
    let mut s: Events = watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(init(&mut s).await, ["one"]);
    // A write the watcher does not see, then the history is compacted past it.
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "g");
    secrets
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "s"}})),
        )
        .await
        .unwrap();
    e.fake.compact_history();
    e.fake.close_watches();
    let (event, errors) = next_ok(&mut s).await;
    assert!(matches!(event, Event::Init), "{event:?}");
    match &errors[..] {
        [watcher::Error::WatchError(s)] => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(
                s.message.starts_with("too old resource version"),
                "{}",
                s.message
            );
        }
        other => panic!("expected one 410, got {other:?}"),
    }
    let mut names = Vec::new();
    loop {
        match next_ok(&mut s).await.0 {
            Event::InitApply(o) => names.push(o.name_any()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["one"]);
    assert_eq!(
        e.fake
            .requests()
            .iter()
            .filter(|r| r.verb == "list")
            .count(),
        2
    );
}

#[tokio::test]
async fn streaming_list_watcher() {
    let e = env().await;
    e.namespace("sl").await;
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "sl");
    create_cm(&api, "x").await;
    let mut s: Events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(init(&mut s).await, ["x"]);
    create_cm(&api, "y").await;
    assert!(matches!(next_ok(&mut s).await.0, Event::Apply(o) if o.name_any() == "y"));
    assert!(e.fake.requests().iter().all(|r| r.verb != "list"));
}

async fn across(outage: Outage) {
    let e = env().await;
    e.namespace("o").await;
    // Without kube-rs's own retries, so the watcher sees the outage.
    let api: Api<ConfigMap> = Api::namespaced(client_without_retries(&e.fake), "o");
    let mut s: Events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    assert!(init(&mut s).await.is_empty());
    e.fake.set_outage(Some(outage)).await;
    // The watch is cut; re-watching fails while the outage lasts.
    let err = within("an error during the outage", async {
        loop {
            if let Some(Err(e)) = s.next().await {
                break e;
            }
        }
    })
    .await;
    if outage == Outage::Unavailable {
        assert!(
            matches!(&err, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 503),
            "{err:?}"
        );
    }
    assert!(api.get_opt("z").await.is_err());
    e.fake.set_outage(None).await;
    create_cm(&api, "z").await;
    let (event, _) = next_ok(&mut s).await;
    assert!(
        matches!(event, Event::Apply(ref o) if o.name_any() == "z"),
        "{event:?}"
    );
}

#[tokio::test]
async fn watcher_recovers_from_a_503_outage() {
    across(Outage::Unavailable).await;
}

#[tokio::test]
async fn watcher_recovers_from_refused_connections() {
    across(Outage::Refuse).await;
}
