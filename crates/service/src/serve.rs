//! Serving the routes over HTTP with time and connection limits ([`serve`]): what
//! `byte8-ledger serve` runs, and what a host embedding the router can run too.
//!
//! `axum::serve` has no limit a slow or greedy client cannot outwait: a client that sends its
//! headers a byte at a time, or its body never, holds a connection (and SIGTERM) for as long as
//! it likes. Here:
//!
//! | limit | default | what happens |
//! |---|---|---|
//! | [`HttpLimits::header_read_timeout`] | 10 s | a connection whose request head is not in within it is closed (HTTP/1) |
//! | [`ServiceConfig::request_timeout`](super::ServiceConfig::request_timeout) | 30 s | a request (body read and handling) not done within it answers 503, which Magento's outbox retries (a 4xx would dead-letter the webhook) |
//! | [`HttpLimits::max_connections`] | 1024 | further connections wait in the listen backlog until one closes |
//! | [`HttpLimits::shutdown_timeout`] | 30 s | on shutdown, requests in flight get this long to finish; connections still open then are closed |

use std::{future::Future, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may take to send a request's head (HTTP/1; idle keep-alive
    /// connections are closed after it too).
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long requests in flight may take to finish once shutdown starts.
    pub shutdown_timeout: Duration,
}

impl Default for HttpLimits {
    /// 10 s for a request head, 1024 connections, 30 s to shut down.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then stops accepting,
/// lets requests in flight finish for at most [`HttpLimits::shutdown_timeout`] and closes what
/// is left. Returns true when every connection ended by itself within the limit.
///
/// Put the service's [`router`](super::Service::router) in `app` (it carries the per-request
/// timeout, [`ServiceConfig::request_timeout`](super::ServiceConfig::request_timeout)).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first: beyond the limit, connections wait in the kernel's backlog.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection =
            graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
        // Reap finished connections so that the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!(
        in_flight = connections.len(),
        limit_s = limits.shutdown_timeout.as_secs_f64(),
        "HTTP shutdown: no new connections; requests in flight may finish"
    );
    let clean = tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await.is_ok();
    if !clean {
        tracing::warn!(open = connections.len(), "connections still open at the shutdown limit: closed");
    }
    connections.shutdown().await;
    clean
}
