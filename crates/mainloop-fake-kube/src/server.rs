//! The HTTP/1.1 server under the fake: its own accept loop, so that an outage can close
//! the listening socket (clients get "connection refused"), cut the open connections,
//! and bind the same port again when the outage ends.

use crate::state::Shared;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `app` on `listener` until `shutdown`, stepping off the port while the fake
/// refuses connections.
pub(crate) async fn run(
    mut listener: TcpListener,
    addr: SocketAddr,
    app: Router,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut refusing = shared.refusing.subscribe();
    loop {
        let conns = shutdown.child_token();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                ok = async { refusing.wait_for(|r| *r).await.is_ok() } => {
                    if !ok {
                        return;
                    }
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let svc = TowerToHyperService::new(app.clone());
                        let token = conns.clone();
                        tokio::spawn(async move {
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc);
                            tokio::select! {
                                r = conn => {
                                    if let Err(e) = r {
                                        tracing::debug!(error = %e, "fake kube connection ended");
                                    }
                                }
                                () = token.cancelled() => {}
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fake kube accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        drop(listener);
        conns.cancel();
        shared.listening.send_replace(false);
        tokio::select! {
            () = shutdown.cancelled() => return,
            ok = async { refusing.wait_for(|r| !*r).await.is_ok() } => {
                if !ok {
                    return;
                }
            }
        }
        listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "fake kube cannot bind its port again yet");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            }
        };
        shared.listening.send_replace(true);
    }
}
