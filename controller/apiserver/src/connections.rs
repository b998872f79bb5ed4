//! What clients may take of the server: how long a connection may take to say what it wants,
//! how many connections and watches may be open at once. Without these, a client that opens
//! connections and trickles bytes (before it has even shown its token) holds memory and
//! tasks for as long as it likes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;

/// The limits, each with its command-line flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--request-head-timeout-seconds`: time for a new connection to finish its TLS handshake
    /// and send its first request's head, and for every later head. A keep-alive connection
    /// that sends no next request for this long is closed too (hyper starts the timer when a
    /// connection waits for its next request); clients open a new one.
    pub request_head_timeout: Duration,
    /// `--max-connections`: connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// `--max-watches`: watches open at once; more get `429 TooManyRequests`.
    pub max_watches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_head_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_watches: 1000,
        }
    }
}

/// Serves HTTP on one accepted connection (plain, or TLS once the handshake is done) until it
/// closes, the server stops, or no request has come within the head timeout.
pub(crate) async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    watcher: Watcher,
    limits: Limits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // hyper's head timeout starts only once it knows the protocol, and telling HTTP/1 from
    // HTTP/2 waits for bytes with no deadline: the first request is watched here.
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    let app = app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            seen.store(true, Ordering::Relaxed);
            next.run(request)
        },
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout);
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app));
    let silent = async {
        tokio::time::sleep(limits.request_head_timeout).await;
        if requested.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = watcher.watch(connection) => served,
        () = silent => Err("no request within the head timeout".into()),
    }
}
