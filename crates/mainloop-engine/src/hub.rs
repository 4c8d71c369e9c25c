//! Per-user event streams. One task reads newly committed events from the log and
//! broadcasts them in memory; each subscriber replays what it missed from the log first,
//! so a client resuming with `Last-Event-ID` gets exactly the events after it.

use crate::{Engine, EngineError, Result};
use futures::stream::BoxStream;
use mainloop_domain::records::Event;
use mainloop_domain::{EventId, UserId};
use mainloop_store::Store;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 500;
/// How many events a slow subscriber may fall behind before it re-reads from the log.
const CHANNEL_CAPACITY: usize = 4096;

#[derive(Debug)]
pub(crate) struct Hub {
    store: Store,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Hub {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }

    /// Starts the fan-out task.
    pub(crate) fn spawn(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let tx = self.tx.clone();
        let mut latest = store.subscribe_events();
        tokio::spawn(async move {
            let mut cursor = *latest.borrow_and_update();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = latest.changed() => if changed.is_err() { return },
                }
                loop {
                    match store.all_events_after(cursor, BATCH).await {
                        Ok(batch) => {
                            let full = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= BATCH;
                            for e in batch {
                                cursor = e.id;
                                // No receivers is fine: nobody is listening right now.
                                let _ = tx.send(Arc::new(e));
                            }
                            if !full {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "event fan-out could not read the log; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        })
    }
}

impl Engine {
    /// `user`'s events after `after`: first those already in the log, then live ones,
    /// each exactly once and in id order. Ends only on a storage error.
    #[must_use]
    pub fn subscribe(
        &self,
        user: UserId,
        after: EventId,
    ) -> BoxStream<'static, Result<Arc<Event>>> {
        let store = self.store().clone();
        // Subscribe before reading the log so nothing committed meanwhile is missed.
        let mut live = self.hub().tx.subscribe();
        Box::pin(async_stream::try_stream! {
            let mut cursor = after;
            loop {
                loop {
                    let batch = store.events_after(user, cursor, BATCH).await.map_err(EngineError::from)?;
                    let full = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= BATCH;
                    for e in batch {
                        cursor = e.id;
                        yield Arc::new(e);
                    }
                    if !full {
                        break;
                    }
                }
                loop {
                    match live.recv().await {
                        Ok(e) => {
                            // Shared, not copied: a hundred subscribers cost one event.
                            if e.user_id == user && e.id > cursor {
                                cursor = e.id;
                                yield e;
                            }
                        }
                        // Fell behind: the log has everything, so re-read from the cursor.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        })
    }
}
