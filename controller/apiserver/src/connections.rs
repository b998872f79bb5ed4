//! What clients may take of the server: how long a connection may take to say what it wants,
//! how many connections and watches may be open at once. Without these, a client that opens
//! connections and trickles bytes (before it has even shown its token) holds memory and
//! tasks for as long as it likes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
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

/// How long open connections (watches) get to finish when the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` (HTTPS through `acceptor`, else plain HTTP) within `limits` until
/// `shutdown` completes; then open connections get a few seconds to finish. The API server's
/// loop, and the operator's admission webhook's; `server` names which in logs.
pub async fn serve(
    server: &'static str,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let connection_slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut last_refusal_logged: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(%error, server, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
            // Closed at once: a client that holds every slot gets nothing more.
            if last_refusal_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(%peer, server, max = limits.max_connections, "at the connection limit: refusing connections");
                last_refusal_logged = Some(std::time::Instant::now());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = match acceptor {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.request_head_timeout, acceptor.accept(stream))
                            .await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, server, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    serve_connection(stream, app, watcher, limits).await
                }
                None => serve_connection(stream, app, watcher, limits).await,
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, server, "connection ended");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
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
