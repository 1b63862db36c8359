//! The HTTP server around the router, with a bound on everything a client can hold:
//! - hyper's HTTP/1 with a timer, so a client that does not send a request's headers within
//!   [`Limits::header_read_timeout`] is closed (an idle keep-alive connection too). `axum::serve`
//!   gives hyper no timer, and without one that timeout is off: sockets that never finish their
//!   headers stayed open for ever.
//! - at most [`Limits::max_connections`] connections at once; past that, new ones wait in the
//!   kernel's accept queue until one closes.
//! - graceful shutdown with a deadline: on shutdown the listener closes, every connection finishes
//!   its request in flight (live streams end themselves, see `order_events`), and whatever is still
//!   open after [`Limits::shutdown_grace`] is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;

/// What one web app allows its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; also how long an idle keep-alive
    /// connection is kept.
    pub header_read_timeout: Duration,
    /// After shutdown begins, how long open connections get to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then drains within the grace period.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, mut shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing) = Shutdown::new();
    let mut connections = JoinSet::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.wait() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to close rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let mut closing = closing.clone();
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closing.wait() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    closing_tx.fire();
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(connections = open, "web app drained"),
        Err(_) => tracing::warn!(
            left = connections.len(),
            grace = ?limits.shutdown_grace,
            "connections still open after the grace period; dropping them"
        ),
    }
    connections.abort_all();
}
