//! Runners on SQLite and PostgreSQL: created with a hashed token, listed newest first by
//! their user only, names unique among those not revoked, hellos recorded unless
//! revoked, and `last_seen_at` never moved back.
use mainloop_domain::runner::Offer;
use mainloop_domain::{RunnerId, TaskId, UserId};
use mainloop_store::{Store, StoreError};

use super::{at, pg_store, sqlite_store, user};

both_backends!(
    runners_are_stored_listed_and_revoked_per_user,
    a_revoked_runner_records_no_hello_and_frees_its_name,
    a_runner_bound_to_a_task_is_found_by_it_and_takes_a_new_token,
);

fn offer() -> Offer {
    Offer {
        slots: 3,
        labels: ["gpu".to_owned(), "linux-x64".to_owned()].into(),
        agents: [mainloop_domain::agents::AgentName::parse("claude").unwrap()].into(),
    }
}

async fn runners_are_stored_listed_and_revoked_per_user(store: Store) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let a = store
        .insert_runner(ada, "build-box", "h1", at(1))
        .await
        .unwrap();
    assert_eq!((a.name.as_str(), a.user_id), ("build-box", ada));
    assert_eq!(
        (a.last_seen_at, a.revoked_at, a.offer.clone()),
        (None, None, None)
    );
    let b = store
        .insert_runner(ada, "gpu-box", "h2", at(2))
        .await
        .unwrap();
    let listed = store.runners(ada).await.unwrap();
    assert_eq!(listed, [b.clone(), a.clone()], "newest first");
    assert!(store.runners(bob).await.unwrap().is_empty());
    assert_eq!(store.runner(bob, a.id).await.unwrap(), None);
    assert_eq!(store.runner(ada, a.id).await.unwrap(), Some(a.clone()));

    // A name is unique per user among runners not revoked; another user may use it.
    let clash = store.insert_runner(ada, "build-box", "h3", at(3)).await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    store
        .insert_runner(bob, "build-box", "h4", at(3))
        .await
        .unwrap();

    assert_eq!(store.runner_by_token("h1").await.unwrap(), Some(a.clone()));
    assert_eq!(store.runner_by_token("nope").await.unwrap(), None);

    assert!(
        store
            .runner_hello(a.id, "1.2.3", &offer(), at(10))
            .await
            .unwrap()
    );
    let seen = store.runner(ada, a.id).await.unwrap().unwrap();
    assert_eq!(seen.version.as_deref(), Some("1.2.3"));
    assert_eq!(seen.offer, Some(offer()));
    assert_eq!(seen.last_seen_at, Some(at(10)));
    store.runner_seen(a.id, at(20)).await.unwrap();
    store.runner_seen(a.id, at(15)).await.unwrap();
    let seen = store.runner(ada, a.id).await.unwrap().unwrap();
    assert_eq!(seen.last_seen_at, Some(at(20)), "never moved back");

    // Another user's runner is not theirs to revoke.
    assert_eq!(store.revoke_runner(bob, a.id, at(30)).await.unwrap(), None);
    assert_eq!(
        store
            .revoke_runner(ada, RunnerId::new_v7(at(0)), at(30))
            .await
            .unwrap(),
        None
    );
    let revoked = store
        .revoke_runner(ada, a.id, at(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at(30)));
    let again = store
        .revoke_runner(ada, a.id, at(40))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(at(30)),
        "the first revocation's time is kept"
    );
    assert_eq!(
        again.offer,
        Some(offer()),
        "a revoked runner keeps its last offer"
    );
}

async fn a_revoked_runner_records_no_hello_and_frees_its_name(store: Store) {
    let ada: UserId = user(&store, "ada").await;
    let a = store.insert_runner(ada, "box", "h1", at(1)).await.unwrap();
    store
        .revoke_runner(ada, a.id, at(2))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !store
            .runner_hello(a.id, "1.0", &offer(), at(3))
            .await
            .unwrap()
    );
    let after = store.runner(ada, a.id).await.unwrap().unwrap();
    assert_eq!(
        (after.version, after.offer, after.last_seen_at),
        (None, None, None)
    );
    let b = store.insert_runner(ada, "box", "h2", at(4)).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(store.runners(ada).await.unwrap().len(), 2);
    // Tokens are unique.
    let dup = store.insert_runner(ada, "other", "h2", at(5)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
}

async fn a_runner_bound_to_a_task_is_found_by_it_and_takes_a_new_token(store: Store) {
    let ada = user(&store, "ada").await;
    let task = TaskId::new_v7(at(1));
    assert_eq!(store.task_runner(task).await.unwrap(), None);
    let free = store.insert_runner(ada, "box", "h0", at(1)).await.unwrap();
    assert_eq!(free.task_id, None);
    let bound = store
        .insert_bound_runner(ada, Some(task), "task-1", "h1", at(2))
        .await
        .unwrap();
    assert_eq!(bound.task_id, Some(task));
    assert_eq!(store.task_runner(task).await.unwrap(), Some(bound.clone()));
    assert_eq!(
        store.task_runner(TaskId::new_v7(at(3))).await.unwrap(),
        None
    );

    store.set_runner_token(bound.id, "h2").await.unwrap();
    assert_eq!(store.runner_by_token("h1").await.unwrap(), None);
    assert_eq!(
        store.runner_by_token("h2").await.unwrap().map(|r| r.id),
        Some(bound.id)
    );
    // Revoked, it is no longer the task's.
    store.revoke_runner(ada, bound.id, at(4)).await.unwrap();
    assert_eq!(store.task_runner(task).await.unwrap(), None);
}
