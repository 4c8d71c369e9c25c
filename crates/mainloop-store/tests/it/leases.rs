//! Run leases on SQLite and PostgreSQL: one per task, epochs that only grow (across a
//! release too), a release under a stale epoch that changes nothing, and each runner's
//! leases.
use mainloop_domain::{RunnerId, TaskId, UserId};
use mainloop_store::{LeaseRow, Store};

use super::{at, new_task, pg_store, sqlite_store, user};

both_backends!(
    lease_epochs_increase_with_each_placement,
    lease_release_with_a_stale_epoch_does_nothing,
    lease_one_per_task_and_listed_per_runner,
);

async fn task(store: &Store, owner: UserId, what: &str) -> TaskId {
    let mut tx = store.begin().await.unwrap();
    let p = tx.upsert_project(owner, "/src/app", at(0)).await.unwrap();
    let (t, _) = tx
        .insert_task(owner, p.id, &new_task(what, None), at(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    t.id
}

async fn runner(store: &Store, owner: UserId, name: &str) -> RunnerId {
    store
        .insert_runner(owner, name, &format!("hash-{name}"), at(1))
        .await
        .unwrap()
        .id
}

async fn lease_epochs_increase_with_each_placement(store: Store) {
    let ada = user(&store, "ada").await;
    let t = task(&store, ada, "first").await;
    let (a, b) = (
        runner(&store, ada, "a").await,
        runner(&store, ada, "b").await,
    );
    assert_eq!(store.run_lease(t).await.unwrap(), None);

    assert_eq!(store.lease_run(t, a, at(10)).await.unwrap(), 1);
    assert_eq!(
        store.run_lease(t).await.unwrap(),
        Some(LeaseRow {
            task_id: t,
            runner_id: a,
            epoch: 1,
            placed_at: at(10)
        })
    );
    // Taken over by another runner, then by the first again: each a new epoch.
    assert_eq!(store.lease_run(t, b, at(20)).await.unwrap(), 2);
    assert_eq!(store.lease_run(t, a, at(30)).await.unwrap(), 3);
    let now = store.run_lease(t).await.unwrap().unwrap();
    assert_eq!((now.runner_id, now.epoch, now.placed_at), (a, 3, at(30)));

    // Released, then leased again: the epochs go on, so a holder of an old one stays
    // fenced off.
    assert!(store.release_run(t, 3).await.unwrap());
    assert_eq!(store.run_lease(t).await.unwrap(), None);
    assert_eq!(store.lease_run(t, b, at(40)).await.unwrap(), 4);
    assert!(!store.release_run(t, 1).await.unwrap());
}

async fn lease_release_with_a_stale_epoch_does_nothing(store: Store) {
    let ada = user(&store, "ada").await;
    let t = task(&store, ada, "first").await;
    let (a, b) = (
        runner(&store, ada, "a").await,
        runner(&store, ada, "b").await,
    );
    assert!(
        !store.release_run(t, 1).await.unwrap(),
        "nothing to release"
    );
    let old = store.lease_run(t, a, at(10)).await.unwrap();
    let new = store.lease_run(t, b, at(20)).await.unwrap();
    assert!(!store.release_run(t, old).await.unwrap(), "a stale epoch");
    let kept = store.run_lease(t).await.unwrap().unwrap();
    assert_eq!((kept.runner_id, kept.epoch), (b, new));
    assert!(store.release_run(t, new).await.unwrap());
    assert!(
        !store.release_run(t, new).await.unwrap(),
        "released already"
    );
    assert_eq!(store.run_lease(t).await.unwrap(), None);
}

async fn lease_one_per_task_and_listed_per_runner(store: Store) {
    let ada = user(&store, "ada").await;
    let (t1, t2) = (
        task(&store, ada, "first").await,
        task(&store, ada, "other").await,
    );
    let (a, b) = (
        runner(&store, ada, "a").await,
        runner(&store, ada, "b").await,
    );
    store.lease_run(t1, a, at(10)).await.unwrap();
    store.lease_run(t2, a, at(20)).await.unwrap();
    let held: Vec<_> = store
        .leases_of_runner(a)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.task_id, l.epoch))
        .collect();
    assert_eq!(held, [(t1, 1), (t2, 1)], "oldest placement first");
    assert!(store.leases_of_runner(b).await.unwrap().is_empty());

    // Placing t1 on b moves it: a task is never on two runners.
    store.lease_run(t1, b, at(30)).await.unwrap();
    let of_a = store.leases_of_runner(a).await.unwrap();
    let of_b = store.leases_of_runner(b).await.unwrap();
    assert_eq!(of_a.iter().map(|l| l.task_id).collect::<Vec<_>>(), [t2]);
    assert_eq!(of_b.iter().map(|l| l.task_id).collect::<Vec<_>>(), [t1]);
    // A released lease is nobody's.
    store.release_run(t2, 1).await.unwrap();
    assert!(store.leases_of_runner(a).await.unwrap().is_empty());

    // A task or runner that does not exist cannot be leased.
    let ghost = TaskId::new_v7(at(0));
    assert!(store.lease_run(ghost, a, at(40)).await.is_err());
    assert!(
        store
            .lease_run(t2, RunnerId::new_v7(at(0)), at(40))
            .await
            .is_err()
    );
    assert_eq!(store.run_lease(t2).await.unwrap(), None);
}
