//! A fake Web Push service for tests, speaking the real wire format: it hands out
//! subscriptions the way a browser's `PushSubscription.toJSON()` shows them, checks each
//! push's VAPID token (RFC 8292) and headers, decrypts the `aes128gcm` body (RFC 8291)
//! with the subscriber's private key, and keeps what it received. Its crypto is written
//! independently of `mainloop-push`, so each checks the other.

mod crypto;
mod server;

pub use crypto::{Subscriber, verify_vapid};
pub use server::{Received, router};

use server::Shared;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakePush {
    addr: SocketAddr,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakePush {
    /// Serves on an ephemeral port of 127.0.0.1.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> Result<Self, Error> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(format!("http://{addr}"));
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake push server failed");
            }
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the origin VAPID tokens must name.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a subscription, as `POST /subscriptions` does; returns its JSON.
    #[must_use]
    pub fn subscribe(&self) -> serde_json::Value {
        self.shared.subscribe()
    }

    /// Every push received so far, in arrival order.
    #[must_use]
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages()
    }

    /// Makes the next `count` pushes to a subscription fail with `status`.
    pub fn fail_next(&self, id: &str, status: u16, count: usize) {
        self.shared.fail_next(id, status, count);
    }
}

impl Drop for FakePush {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
