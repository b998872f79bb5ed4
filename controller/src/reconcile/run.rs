//! The loop that runs the reconcilers: one kube-rs controller per kind, and the router that
//! turns each cluster's LXD events into the reconciles they concern.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use lxd_operator_crds::{LxdCluster, LxdContainer, LxdContainerSet, LxdPlacementPolicy};
use tokio::sync::mpsc;

use super::connections::ClusterSignal;
use super::context::{Context, Error, EventStreamState};
use super::{cluster, container, policy, set};
use crate::kubernetes_nodes::KubeSide;
use crate::leader::Leadership;
use crate::lxd::events::EventStreamItem;
use crate::telemetry::Metrics;
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics::{ClusterLabels, KindLabels};

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
    ctx.readiness.reconciled();
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
/// finalizers, whether it is being deleted, and a move the rebalancer asks of it; not its
/// status or labels.
fn reconcile_relevant(container: &LxdContainer) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let metadata = &container.metadata;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    metadata.generation.hash(&mut hasher);
    metadata.finalizers.hash(&mut hasher);
    metadata.deletion_timestamp.is_some().hash(&mut hasher);
    // The rebalancer's move request (see `container::moves`).
    for key in [
        lxd_operator_crds::rebalance::MOVE_TO_ANNOTATION,
        lxd_operator_crds::rebalance::MOVE_REQUESTED_AT_ANNOTATION,
    ] {
        metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// Runs the reconcilers until SIGTERM or SIGINT; reconciles in progress finish first.
/// `readiness` turns ready once the caches of clusters and containers are synced. With
/// `kubernetes_nodes`, Pods and Nodes are watched too, for clusters that map members to Nodes.
pub async fn run(
    client: kube::Client,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    leadership: Leadership,
    secret_scope: super::secrets::SecretScope,
    kubernetes_nodes: bool,
) {
    let kube_side = kubernetes_nodes.then(|| KubeSide::watch(&client));
    let (signal_sender, signals) = mpsc::unbounded_channel::<ClusterSignal>();
    let (container_reader, container_writer) = reflector::store();
    let (cluster_reader, cluster_writer) = reflector::store();
    let (container_trigger, container_refs) =
        futures::channel::mpsc::unbounded::<ObjectRef<LxdContainer>>();
    let ctx = Arc::new(Context::new(
        client.clone(),
        signal_sender,
        metrics,
        container_reader.clone(),
        cluster_reader.clone(),
        container_trigger.clone(),
        leadership,
        readiness.clone(),
        secret_scope,
        kube_side,
    ));
    tokio::spawn(watch_progress(ctx.clone()));
    if let Some(side) = ctx.kube_side.clone() {
        tokio::spawn(retry_unschedulable_when_pods_go(ctx.clone(), side));
    }
    let (cluster_trigger, cluster_refs) =
        futures::channel::mpsc::unbounded::<ObjectRef<LxdCluster>>();
    tokio::spawn(route_lxd_events(
        ctx.clone(),
        signals,
        container_trigger,
        cluster_trigger,
    ));

    let cluster_changes = watcher::watcher(
        Api::<LxdCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(cluster_writer)
    .applied_objects();
    let cluster_controller = Controller::for_stream(cluster_changes, cluster_reader);
    // Our own status writes do not wake the container's reconciler again (each would cost LXD
    // reads in a rollout); what does: spec changes (generation), finalizers (the finalizer
    // helper waits for its own write), deletion, and LXD events.
    let container_changes = watcher::watcher(
        Api::<LxdContainer>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(container_writer)
    .applied_objects()
    .predicate_filter(reconcile_relevant, Default::default());
    let container_controller = Controller::for_stream(container_changes, container_reader);
    // A set wakes when one of its children changes (status included: Ready counts).
    let set_controller = Controller::new(
        Api::<LxdContainerSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<LxdContainer>::all(client.clone()),
        watcher::Config::default().labels(lxd_operator_crds::set::SET_LABEL),
    );
    let policy_controller = Controller::new(
        Api::<LxdPlacementPolicy>::all(client),
        watcher::Config::default(),
    );
    tokio::spawn(report_synced(
        cluster_controller.store(),
        container_controller.store(),
        readiness,
    ));
    futures::join!(
        drive(
            cluster_controller.reconcile_on(cluster_refs),
            "LxdCluster",
            cluster::reconcile,
            cluster::error_policy,
            ctx.clone(),
        ),
        drive(
            container_controller.reconcile_on(container_refs),
            "LxdContainer",
            container::reconcile,
            container::error_policy,
            ctx.clone(),
        ),
        drive(
            set_controller,
            "LxdContainerSet",
            set::reconcile,
            set::error_policy,
            ctx.clone(),
        ),
        drive(
            policy_controller,
            "LxdPlacementPolicy",
            policy::reconcile,
            policy::error_policy,
            ctx,
        ),
    );
}

/// Tells `/healthz` what progress to expect: reconciles while there are containers (each comes
/// back every resync interval), and event streams of the clusters connected now.
async fn watch_progress(ctx: Arc<Context>) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        ctx.readiness
            .expect_reconciles(!ctx.containers.state().is_empty());
        ctx.readiness.keep_streams(&ctx.connections.clusters());
    }
}

/// When a Pod on a Node finishes or goes, the containers that found no room (Unschedulable)
/// on clusters mapped to Nodes are decided again at once, as kube-scheduler retries its
/// unschedulable Pods when one is deleted, instead of at their next retry.
async fn retry_unschedulable_when_pods_go(ctx: Arc<Context>, side: KubeSide) {
    use kube::ResourceExt;
    use lxd_operator_crds::container::ContainerPhase;
    loop {
        side.requests_freed().await;
        // A job's Pods often finish together: one retry for them all.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting = ctx.containers.state_filter(|container| {
            container.status.as_ref().and_then(|s| s.phase.as_ref())
                == Some(&ContainerPhase::Unschedulable)
                && ctx
                    .cluster(&container.spec.cluster_ref.name)
                    .is_some_and(|c| c.spec.kubernetes_nodes.is_some())
        });
        for container in waiting {
            let _ = ctx.wake_sender().unbounded_send(
                ObjectRef::new(&container.name_any())
                    .within(&container.namespace().unwrap_or_default()),
            );
        }
    }
}

/// Runs one kind's controller, each reconcile measured, until SIGTERM or SIGINT.
async fn drive<K, Reconciling>(
    controller: Controller<K>,
    kind: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Reconciling,
    error_policy: fn(Arc<K>, &Error, Arc<Context>) -> Action,
    ctx: Arc<Context>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Reconciling: Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .shutdown_on_signal()
        .run(
            move |object, ctx: Arc<Context>| async move {
                measured(&ctx.clone(), kind, reconcile(object, ctx)).await
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Marks the operator ready once both caches are synced.
async fn report_synced(
    clusters: reflector::Store<LxdCluster>,
    containers: reflector::Store<LxdContainer>,
    readiness: Arc<Readiness>,
) {
    // The store's readiness wakes only its last waiter (the controller itself), so ask again
    // and again rather than wait once.
    loop {
        let poll = Duration::from_millis(200);
        let clusters_ready = tokio::time::timeout(poll, clusters.wait_until_ready()).await;
        let containers_ready = tokio::time::timeout(poll, containers.wait_until_ready()).await;
        if matches!((clusters_ready, containers_ready), (Ok(Ok(())), Ok(Ok(())))) {
            readiness.set_synced(true);
            return;
        }
    }
}

/// LXD events to the reconciles they concern: an instance's event wakes its container, a
/// member's wakes its cluster, and a reconnected stream wakes every container of the cluster
/// (events may have been missed).
async fn route_lxd_events(
    ctx: Arc<Context>,
    mut signals: mpsc::UnboundedReceiver<ClusterSignal>,
    container_trigger: UnboundedSender<ObjectRef<LxdContainer>>,
    cluster_trigger: UnboundedSender<ObjectRef<LxdCluster>>,
) {
    while let Some(ClusterSignal { cluster, item }) = signals.recv().await {
        // A stream that keeps failing to reconnect is no sign of life: with every member
        // hung it would otherwise keep /healthz green forever.
        if !matches!(item, EventStreamItem::Disconnected { .. }) {
            ctx.readiness.stream_alive(&cluster);
        }
        match item {
            EventStreamItem::Alive => {}
            EventStreamItem::Event(event) => {
                let member_event = event
                    .lifecycle()
                    .is_some_and(|l| l.action.is_member_change());
                // Where Nodes are told what LXD holds, an instance made, changed or deleted
                // changes that at once, not at the next sync.
                let allocation_event = ctx.kube_side.is_some()
                    && event
                        .lifecycle()
                        .is_some_and(|l| l.action.changes_allocation())
                    && ctx
                        .cluster(&cluster)
                        .is_some_and(|c| c.spec.kubernetes_nodes.is_some());
                if member_event || allocation_event {
                    ctx.request_cluster_refresh(&cluster);
                    let _ = cluster_trigger.unbounded_send(ObjectRef::new(&cluster));
                }
                if let Some(reference) = event
                    .instance_name()
                    .and_then(|name| ctx.container_of(&cluster, &name))
                {
                    let _ = container_trigger.unbounded_send(reference);
                }
            }
            EventStreamItem::Connected { endpoint } => {
                tracing::info!(%cluster, %endpoint, "LXD event stream connected");
                ctx.set_event_stream(&cluster, EventStreamState::Connected { endpoint });
                ctx.request_cluster_refresh(&cluster);
                let _ = cluster_trigger.unbounded_send(ObjectRef::new(&cluster));
                ctx.metrics
                    .event_stream_connects
                    .get_or_create(&ClusterLabels {
                        cluster: cluster.clone(),
                    })
                    .inc();
                for reference in ctx.containers_of(&cluster) {
                    let _ = container_trigger.unbounded_send(reference);
                }
            }
            EventStreamItem::Disconnected { endpoint, error } => {
                tracing::warn!(%cluster, %endpoint, %error, "LXD event stream broke; reconnecting");
                ctx.set_event_stream(&cluster, EventStreamState::Reconnecting { endpoint, error });
                ctx.request_cluster_refresh(&cluster);
                let _ = cluster_trigger.unbounded_send(ObjectRef::new(&cluster));
            }
        }
    }
}
