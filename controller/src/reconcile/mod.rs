//! One reconciler per kind, and what they share: the [`Context`] and the loop that runs them.
//!
//! LXD is outside Kubernetes' watches, so reconcilers requeue on success with a resync
//! interval, and each cluster's LXD event stream wakes the container whose instance changed
//! (within a second of a `lxc stop` behind our back), and every container of a cluster when the
//! stream reconnects (events may have been missed).

pub mod cluster;
pub mod connections;
pub mod container;
pub mod placement;
pub mod policy;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, finalizer, reflector, watcher};
use lxd_operator_crds::{LxdCluster, LxdContainer, LxdPlacementPolicy};
use tokio::sync::mpsc;

use self::connections::{ClusterSignal, Connections};
use crate::lxd::LxdError;
use crate::lxd::events::EventStreamItem;
use crate::telemetry::Metrics;
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics::{ClusterLabels, KindLabels};

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
            Error::Kube(_) | Error::ClusterNotReady { .. } => true,
        }
    }
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
    /// Placement state (reservations, round-robin turns) of every cluster.
    pub placements: placement::Placements,
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
    fn new(
        client: kube::Client,
        signals: mpsc::UnboundedSender<ClusterSignal>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: "lxd-operator".to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            connections: Connections::new(signals, metrics.clone()),
            resync: RESYNC_INTERVAL,
            metrics,
            instances: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashSet::new()),
            placements: placement::Placements::default(),
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

    fn container_of(&self, cluster: &str, instance: &str) -> Option<ObjectRef<LxdContainer>> {
        self.instances
            .lock()
            .ok()?
            .get(&(cluster.to_owned(), instance.to_owned()))
            .cloned()
    }

    fn containers_of(&self, cluster: &str) -> Vec<ObjectRef<LxdContainer>> {
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

    fn request_cluster_refresh(&self, cluster: &str) {
        if let Ok(mut refresh) = self.refresh.lock() {
            refresh.insert(cluster.to_owned());
        }
    }

    /// Whether a refresh of `cluster` was requested (and clears the request).
    pub fn take_cluster_refresh(&self, cluster: &str) -> bool {
        self.refresh
            .lock()
            .map(|mut refresh| refresh.remove(cluster))
            .unwrap_or(false)
    }
}

/// Runs `reconcile` with its duration, result and concurrency recorded in the metrics.
async fn measured<T>(
    ctx: &Context,
    kind: &str,
    reconcile: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let labels = KindLabels {
        kind: kind.to_owned(),
    };
    ctx.metrics
        .reconciles_in_flight
        .get_or_create(&labels)
        .inc();
    let started = std::time::Instant::now();
    let result = reconcile.await;
    ctx.metrics
        .reconciles_in_flight
        .get_or_create(&labels)
        .dec();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.metric_label(),
    };
    ctx.metrics
        .observe_reconcile(kind, outcome, started.elapsed());
    result
}

/// What makes a change to an LxdContainer worth a reconcile: its spec (generation), its
/// finalizers and whether it is being deleted; not its status or labels.
fn reconcile_relevant(container: &LxdContainer) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let metadata = &container.metadata;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    metadata.generation.hash(&mut hasher);
    metadata.finalizers.hash(&mut hasher);
    metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs both reconcilers until SIGTERM or SIGINT; reconciles in progress finish first.
/// `readiness` turns ready once both caches are synced.
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    let (signal_sender, mut signals) = mpsc::unbounded_channel::<ClusterSignal>();
    let ctx = Arc::new(Context::new(client.clone(), signal_sender, metrics));
    let ctx_for_policies = ctx.clone();
    let (container_trigger, container_refs) =
        futures::channel::mpsc::unbounded::<ObjectRef<LxdContainer>>();
    let (cluster_trigger, cluster_refs) =
        futures::channel::mpsc::unbounded::<ObjectRef<LxdCluster>>();

    // LXD events → the reconciles they concern.
    let router_ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(ClusterSignal { cluster, item }) = signals.recv().await {
            match item {
                EventStreamItem::Event(event) => {
                    let member_event = event
                        .lifecycle()
                        .is_some_and(|l| l.action.is_member_change());
                    if member_event {
                        router_ctx.request_cluster_refresh(&cluster);
                        let _ = cluster_trigger.unbounded_send(ObjectRef::new(&cluster));
                    }
                    if let Some(reference) = event
                        .instance_name()
                        .and_then(|name| router_ctx.container_of(&cluster, &name))
                    {
                        let _ = container_trigger.unbounded_send(reference);
                    }
                }
                EventStreamItem::Connected { endpoint } => {
                    tracing::info!(%cluster, %endpoint, "LXD event stream connected");
                    router_ctx
                        .metrics
                        .event_stream_connects
                        .get_or_create(&ClusterLabels {
                            cluster: cluster.clone(),
                        })
                        .inc();
                    for reference in router_ctx.containers_of(&cluster) {
                        let _ = container_trigger.unbounded_send(reference);
                    }
                }
                EventStreamItem::Disconnected { endpoint, error } => {
                    tracing::warn!(%cluster, %endpoint, %error, "LXD event stream broke; reconnecting");
                    router_ctx.request_cluster_refresh(&cluster);
                    let _ = cluster_trigger.unbounded_send(ObjectRef::new(&cluster));
                }
            }
        }
    });

    let cluster_controller = Controller::new(
        Api::<LxdCluster>::all(client.clone()),
        watcher::Config::default(),
    );
    // Our own status writes do not wake the container's reconciler again (each would cost LXD
    // reads in a rollout); what does: spec changes (generation), finalizers (the finalizer
    // helper waits for its own write), deletion, and LXD events.
    let (container_reader, container_writer) = reflector::store();
    let container_changes =
        watcher::watcher(Api::<LxdContainer>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(container_writer)
            .applied_objects()
            .predicate_filter(reconcile_relevant, Default::default());
    let container_controller = Controller::for_stream(container_changes, container_reader);
    let (cluster_store, container_store) =
        (cluster_controller.store(), container_controller.store());
    tokio::spawn(async move {
        // The store's readiness wakes only its last waiter (the controller itself), so ask
        // again and again rather than wait once.
        loop {
            let poll = Duration::from_millis(200);
            let clusters = tokio::time::timeout(poll, cluster_store.wait_until_ready()).await;
            let containers = tokio::time::timeout(poll, container_store.wait_until_ready()).await;
            if matches!((clusters, containers), (Ok(Ok(())), Ok(Ok(())))) {
                readiness.set_synced(true);
                return;
            }
        }
    });
    let clusters = cluster_controller
        .reconcile_on(cluster_refs)
        .shutdown_on_signal()
        .run(
            |cluster, ctx: Arc<Context>| async move {
                measured(&ctx.clone(), "LxdCluster", cluster::reconcile(cluster, ctx)).await
            },
            cluster::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let containers = container_controller
        .reconcile_on(container_refs)
        .shutdown_on_signal()
        .run(
            |container, ctx: Arc<Context>| async move {
                measured(
                    &ctx.clone(),
                    "LxdContainer",
                    container::reconcile(container, ctx),
                )
                .await
            },
            container::error_policy,
            ctx,
        )
        .for_each(|_| async {});
    let policies = Controller::new(
        Api::<LxdPlacementPolicy>::all(ctx_for_policies.client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        |policy, ctx: Arc<Context>| async move {
            measured(
                &ctx.clone(),
                "LxdPlacementPolicy",
                policy::reconcile(policy, ctx),
            )
            .await
        },
        policy::error_policy,
        ctx_for_policies,
    )
    .for_each(|_| async {});
    futures::join!(clusters, containers, policies);
}
