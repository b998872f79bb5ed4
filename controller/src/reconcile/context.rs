//! What every reconcile shares: the [`Context`] (API client, LXD connections, Events, metrics,
//! placement state, the index of which container owns which instance) and the [`Error`] of a
//! reconcile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer;
use kube::runtime::reflector::{self, ObjectRef};
use lxd_operator_crds::{LxdCluster, LxdContainer};
use tokio::sync::mpsc;

use super::backoff::Backoffs;
use super::connections::{ClusterSignal, Connections};
use super::container::placement::Placements;
use super::container::rollout::RolloutClock;
use crate::kubernetes_nodes::KubeSide;
use crate::leader::Leadership;
use crate::lxd::LxdError;
use crate::telemetry::Metrics;
use crate::telemetry::http::Readiness;

/// How often a container is checked against LXD when nothing happened.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Talking to LXD failed.
    #[error("LXD: {0}")]
    Lxd(#[from] LxdError),
    /// The container's cluster is not connected.
    #[error("LxdCluster {cluster} is not connected")]
    ClusterNotReady { cluster: String },
    /// The instance's delete ran, but LXD still holds it.
    #[error("instance {instance} not deleted yet: {state}")]
    NotDeletedYet { instance: String, state: String },
    /// Adding or removing the finalizer failed, or the reconcile inside it did.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Lxd(error) => error.metric_label(),
            Error::ClusterNotReady { .. } => "cluster_not_ready",
            Error::NotDeletedYet { .. } => "not_deleted_yet",
            Error::Finalizer(error) => match error.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_label()
                }
                _ => "finalizer",
            },
        }
    }

    /// Whether retrying soon may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Lxd(error) => error.is_transient(),
            Error::Finalizer(error) => match error.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.is_transient()
                }
                _ => true,
            },
            Error::Kube(_) | Error::ClusterNotReady { .. } | Error::NotDeletedYet { .. } => true,
        }
    }
}

/// A cluster's event stream, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStreamState {
    /// Following the events of every member through this endpoint.
    Connected { endpoint: String },
    /// Broken at this endpoint with this error; reconnecting.
    Reconnecting { endpoint: String, error: String },
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes (or embedded) API.
    pub client: kube::Client,
    /// LXD clients by cluster.
    pub connections: Connections,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// How often containers are checked when nothing happened.
    pub resync: Duration,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Which container owns which instance, for LXD events: (cluster, instance) → container.
    instances: Mutex<HashMap<(String, String), ObjectRef<LxdContainer>>>,
    /// Clusters whose status should be refreshed at once (member events).
    refresh: Mutex<HashSet<String>>,
    /// Each cluster's event stream as it last reported itself.
    event_streams: Mutex<HashMap<String, EventStreamState>>,
    /// Placement state (reservations, round-robin turns) of every cluster.
    pub placements: Placements,
    /// The Pods and Nodes, watched when the operator runs beside Kubernetes
    /// (`--kubernetes-nodes`).
    pub kube_side: Option<KubeSide>,
    /// When new containers were first seen, to time their first rollout.
    pub rollouts: RolloutClock,
    /// Every LxdContainer as the container controller's watch last saw it (placement reads
    /// the placed ones here instead of listing them from the API for every decision).
    pub containers: reflector::Store<LxdContainer>,
    /// What `/readyz` and `/healthz` report: reconciles and event streams tell it their
    /// progress.
    pub readiness: Arc<Readiness>,
    /// Failures in a row of each container, for its retries and Warnings.
    pub backoffs: Backoffs,
    /// Every LxdCluster as the cluster controller's watch last saw it: a container reads its
    /// cluster's members (online, drained) here.
    pub clusters: reflector::Store<LxdCluster>,
    /// Wakes a container's reconcile (a member came back or failed).
    wake: UnboundedSender<ObjectRef<LxdContainer>>,
    /// Moves under way, per cluster, against `maxConcurrentMoves`.
    pub moves: super::container::moves::MoveSlots,
    /// Disruptions of sets' children granted against their sets' `maxUnavailable`.
    pub budgets: super::container::budget::Budgets,
    /// The status each cluster's reconcile last wrote.
    pub cluster_statuses: super::cluster::WrittenStatuses,
    /// Namespaces' LXD projects known to be as intended.
    pub projects: super::container::project::ProjectsMade,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("connections", &self.connections)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        client: kube::Client,
        signals: mpsc::UnboundedSender<ClusterSignal>,
        metrics: Arc<Metrics>,
        containers: reflector::Store<LxdContainer>,
        clusters: reflector::Store<LxdCluster>,
        wake: UnboundedSender<ObjectRef<LxdContainer>>,
        leadership: Leadership,
        readiness: Arc<Readiness>,
        secret_scope: super::secrets::SecretScope,
        kube_side: Option<KubeSide>,
    ) -> Self {
        let reporter = Reporter {
            controller: "lxd-operator".to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            connections: Connections::new(signals, metrics.clone(), leadership, secret_scope),
            resync: RESYNC_INTERVAL,
            metrics,
            instances: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashSet::new()),
            event_streams: Mutex::new(HashMap::new()),
            placements: Placements::new(kube_side.clone()),
            kube_side,
            rollouts: RolloutClock::default(),
            containers,
            readiness,
            backoffs: Backoffs::default(),
            clusters,
            wake,
            moves: Default::default(),
            budgets: Default::default(),
            projects: Default::default(),
            cluster_statuses: Default::default(),
        }
    }

    /// The LxdCluster `name` as last watched.
    pub fn cluster(&self, name: &str) -> Option<Arc<LxdCluster>> {
        self.clusters.get(&ObjectRef::new(name))
    }

    /// What wakes a container's reconcile.
    pub(super) fn wake_sender(&self) -> &UnboundedSender<ObjectRef<LxdContainer>> {
        &self.wake
    }

    /// Wakes the reconcile of every container of `cluster`.
    pub(super) fn wake_containers_of(&self, cluster: &str) {
        for reference in self.containers_of(cluster) {
            let _ = self.wake.unbounded_send(reference);
        }
    }

    /// Remembers that `container` owns the instance `instance` on `cluster`.
    pub fn index_instance(&self, cluster: &str, instance: &str, container: &LxdContainer) {
        if let Ok(mut index) = self.instances.lock() {
            index.insert(
                (cluster.to_owned(), instance.to_owned()),
                ObjectRef::from_obj(container),
            );
        }
    }

    pub(super) fn container_of(
        &self,
        cluster: &str,
        instance: &str,
    ) -> Option<ObjectRef<LxdContainer>> {
        self.instances
            .lock()
            .ok()?
            .get(&(cluster.to_owned(), instance.to_owned()))
            .cloned()
    }

    pub(super) fn containers_of(&self, cluster: &str) -> Vec<ObjectRef<LxdContainer>> {
        self.instances
            .lock()
            .map(|index| {
                index
                    .iter()
                    .filter(|((c, _), _)| c == cluster)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn request_cluster_refresh(&self, cluster: &str) {
        if let Ok(mut refresh) = self.refresh.lock() {
            refresh.insert(cluster.to_owned());
        }
    }

    /// Records what `cluster`'s event stream last said of itself.
    pub(super) fn set_event_stream(&self, cluster: &str, state: EventStreamState) {
        if let Ok(mut streams) = self.event_streams.lock() {
            streams.insert(cluster.to_owned(), state);
        }
    }

    /// What `cluster`'s event stream last said of itself (None: it has not yet).
    pub fn event_stream(&self, cluster: &str) -> Option<EventStreamState> {
        self.event_streams.lock().ok()?.get(cluster).cloned()
    }

    /// Whether a refresh of `cluster` was requested (and clears the request).
    pub fn take_cluster_refresh(&self, cluster: &str) -> bool {
        self.refresh
            .lock()
            .map(|mut refresh| refresh.remove(cluster))
            .unwrap_or(false)
    }
}
