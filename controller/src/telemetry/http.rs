//! The operator's own HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the controller
//! makes progress) and `/readyz` (connected to the API with caches synced, as leader or
//! standby).
//!
//! `/healthz` fails (so that Kubernetes restarts the pod) when the controller is wedged: there
//! are containers, whose reconciles come back at least every resync interval, and none has
//! finished for the stall time; or a cluster's event stream has shown no sign of life (LXD
//! pings it every 10 s, and it reconnects when it breaks) for as long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Metrics;

/// No progress for this long makes `/healthz` fail, by default.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(300);

/// Whether the operator is ready to serve (`/readyz`) and alive (`/healthz`), set by the
/// controller.
#[derive(Debug)]
pub struct Readiness {
    synced: AtomicBool,
    stall_after: Duration,
    progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    /// When the last reconcile finished.
    reconciled_at: Option<Instant>,
    /// Whether reconciles must keep coming (there are containers to resync).
    reconciles_expected: bool,
    /// When each cluster's event stream last showed life.
    streams: HashMap<String, Instant>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::with_stall_after(DEFAULT_STALL_AFTER)
    }
}

impl Readiness {
    /// `/healthz` fails after `stall_after` without progress.
    pub fn with_stall_after(stall_after: Duration) -> Self {
        Readiness {
            synced: AtomicBool::new(false),
            stall_after,
            progress: Mutex::new(Progress::default()),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        // Plain bookkeeping: a panic elsewhere cannot leave it half-changed.
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A reconcile finished (whatever its result).
    pub fn reconciled(&self) {
        self.progress().reconciled_at = Some(Instant::now());
    }

    /// Whether reconciles must keep coming; the clock starts when they become expected.
    pub fn expect_reconciles(&self, expected: bool) {
        let mut progress = self.progress();
        if expected && !progress.reconciles_expected {
            progress.reconciled_at = Some(Instant::now());
        }
        progress.reconciles_expected = expected;
    }

    /// `cluster`'s event stream showed life (an event, a ping, a reconnect).
    pub fn stream_alive(&self, cluster: &str) {
        self.progress()
            .streams
            .insert(cluster.to_owned(), Instant::now());
    }

    /// Keeps only the streams of these clusters (the others are gone).
    pub fn keep_streams(&self, clusters: &[String]) {
        self.progress()
            .streams
            .retain(|cluster, _| clusters.contains(cluster));
    }

    /// Why the controller counts as wedged at `now`, if it does.
    fn stalled_at(&self, now: Instant) -> Option<String> {
        let progress = self.progress();
        let stalled = |at: Instant| now.saturating_duration_since(at) > self.stall_after;
        if progress.reconciles_expected && progress.reconciled_at.is_some_and(stalled) {
            return Some(format!(
                "no reconcile finished for over {} s",
                self.stall_after.as_secs()
            ));
        }
        let mut quiet: Vec<&String> = progress
            .streams
            .iter()
            .filter(|(_, at)| stalled(**at))
            .map(|(cluster, _)| cluster)
            .collect();
        quiet.sort();
        (!quiet.is_empty()).then(|| {
            format!(
                "no sign of life from the LXD event stream of {quiet:?} for over {} s",
                self.stall_after.as_secs()
            )
        })
    }

    /// Marks the caches synced (or not).
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    /// Whether the caches are synced.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The router of the endpoints, for tests and for [`serve`].
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthy))
        .route("/readyz", get(ready))
        .with_state(AppState { metrics, readiness })
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn healthy(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.stalled_at(Instant::now()) {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.is_synced() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

/// Serves the endpoints on a bound listener until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    tracing::info!(address = ?listener.local_addr().ok(), "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, readiness)).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn status_of(router: Router, path: &str) -> StatusCode {
        router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn readyz_is_503_until_the_caches_sync_and_healthz_always_200() {
        let readiness = Arc::new(Readiness::default());
        let router = router(Arc::new(Metrics::new()), readiness.clone());
        assert_eq!(
            status_of(router.clone(), "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_of(router.clone(), "/healthz").await, StatusCode::OK);
        readiness.set_synced(true);
        assert_eq!(status_of(router.clone(), "/readyz").await, StatusCode::OK);
        assert_eq!(status_of(router, "/metrics").await, StatusCode::OK);
    }

    #[test]
    fn a_controller_without_reconciles_or_stream_life_for_the_stall_time_is_unhealthy() {
        let readiness = Readiness::with_stall_after(Duration::from_secs(300));
        let now = Instant::now();
        let later = |s| now + Duration::from_secs(s);
        assert_eq!(readiness.stalled_at(later(3600)), None, "nothing to do yet");
        readiness.expect_reconciles(true);
        assert_eq!(readiness.stalled_at(later(299)), None);
        assert_eq!(
            readiness.stalled_at(later(301)).as_deref(),
            Some("no reconcile finished for over 300 s")
        );
        readiness.reconciled();
        assert_eq!(readiness.stalled_at(later(299)), None);
        readiness.expect_reconciles(false);
        assert_eq!(
            readiness.stalled_at(later(3600)),
            None,
            "no containers left"
        );

        readiness.stream_alive("local");
        assert_eq!(readiness.stalled_at(later(299)), None);
        assert_eq!(
            readiness.stalled_at(later(301)).as_deref(),
            Some(r#"no sign of life from the LXD event stream of ["local"] for over 300 s"#)
        );
        readiness.keep_streams(&[]);
        assert_eq!(
            readiness.stalled_at(later(301)),
            None,
            "the cluster is gone"
        );
    }
}
