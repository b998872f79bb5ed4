//! The container reconciler's placement step: the engine ([`crate::placement`], which does no
//! I/O) wired to the world.
//!
//! - [`policy`]: which policy places the container, and loading it.
//! - [`figures`]: the members as LXD shows them, read once per burst.
//! - [`burst`]: decisions pending together are made largest first.
//! - [`webhook`]: the policy's webhook over HTTP.
//!
//! Here: the operator's own containers from the API (for affinity and spreading), the
//! reservations of decisions LXD does not show yet, and the lock that serializes the decisions
//! of one cluster.

pub mod burst;
pub mod figures;
pub mod policy;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::policy::WebhookFailurePolicy;

use self::burst::{Pending, PendingEntry};
use self::figures::FiguresCache;
use self::policy::{ChosenPolicy, ClusterSettings, PolicyChoice, PolicyLoadError};
use self::webhook::{WebhookClients, WebhookError};
use crate::kubernetes_nodes::KubeSide;
use crate::lxd::{LxdClient, LxdError};
use crate::placement::model::{Placed, Request};
use crate::placement::reservations::Reservations;
use crate::placement::{self as engine, Decision, Unschedulable};

/// What placement is asked for one container: read from its spec and validated once, in the
/// desired-state step.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementRequest {
    /// The container's uid (its reservation's key).
    pub uid: String,
    /// The LxdCluster it goes to.
    pub cluster: String,
    /// What it asks for: resources, labels, placement spec.
    pub request: Request,
    /// Which policy places it.
    pub policy: PolicyChoice,
}

/// Per-cluster decision state: reservations and the round-robin counter. Its lock is held
/// from snapshot to decision, which serializes the decisions of one cluster.
#[derive(Debug, Default)]
struct ClusterPlacement {
    reservations: Reservations,
    decisions: u64,
}

/// One cluster's placement state, its member figures and its pending decisions.
#[derive(Debug, Default)]
struct ClusterShared {
    state: tokio::sync::Mutex<ClusterPlacement>,
    figures: FiguresCache,
    pending: Pending,
}

/// Placement state of every cluster, the webhooks' HTTP clients, and the Pods and Nodes
/// (when the operator watches them) whose requests count on mapped members.
#[derive(Debug, Default)]
pub struct Placements {
    clusters: tokio::sync::Mutex<HashMap<String, Arc<ClusterShared>>>,
    webhooks: WebhookClients,
    kube_side: Option<KubeSide>,
}

impl Placements {
    /// Placements that count the Pods of `kube_side` on mapped members.
    pub fn new(kube_side: Option<KubeSide>) -> Placements {
        Placements {
            kube_side,
            ..Placements::default()
        }
    }

    async fn cluster(&self, name: &str) -> Arc<ClusterShared> {
        self.clusters
            .lock()
            .await
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Ends a container's reservation (its create failed, or it is deleted).
    pub async fn release(&self, cluster: &str, uid: &str) {
        self.cluster(cluster)
            .await
            .state
            .lock()
            .await
            .reservations
            .release(uid);
    }
}

/// Why a container could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// No member passes the filters.
    #[error("{}", .0.message)]
    Unschedulable(Unschedulable),
    /// The chosen policy does not exist or is invalid.
    #[error(transparent)]
    Policy(PolicyLoadError),
    /// The webhook failed and the policy says Fail.
    #[error("placement webhook: {0}")]
    Webhook(#[source] WebhookError),
    /// Reading the cluster failed.
    #[error(transparent)]
    Lxd(#[from] LxdError),
    /// Reading the API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The cluster maps members to Kubernetes Nodes, and the Pods and Nodes are not listed yet.
    #[error("the Pods and Nodes of the Kubernetes cluster are not listed yet")]
    KubernetesNotSynced,
}

/// How long a decision waits for the first lists of Pods and Nodes.
const KUBE_SIDE_PATIENCE: Duration = Duration::from_secs(5);

impl From<PolicyLoadError> for PlacementError {
    fn from(error: PolicyLoadError) -> Self {
        match error {
            PolicyLoadError::Kube(error) => PlacementError::Kube(error),
            other => PlacementError::Policy(other),
        }
    }
}

/// A placement's outcome, and the policy that made it (for status, Events and metrics).
#[derive(Debug)]
pub struct PlacementAttempt {
    /// The policy's name; `unresolved` when the API could not say which.
    pub policy: String,
    /// The decision, or why there is none.
    pub outcome: Result<Decision, PlacementError>,
    /// What the decision waited for, and how long (`lxd_operator_placement_wait_seconds`).
    pub waits: Waits,
}

/// What a decision waited for, by the wait's metric label.
#[derive(Debug, Default)]
pub struct Waits(pub Vec<(&'static str, Duration)>);

impl Waits {
    /// Times `future` as the wait `what`.
    async fn time<T>(&mut self, what: &'static str, future: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let output = future.await;
        self.0.push((what, started.elapsed()));
        output
    }
}

/// Chooses a member for the container and reserves it.
pub async fn place(
    asked: &PlacementRequest,
    client: &LxdClient,
    kube: &kube::Client,
    containers: &Store<LxdContainer>,
    placements: &Placements,
) -> PlacementAttempt {
    let mut waits = Waits::default();
    let (chosen, settings) = match policy::choose(kube, &asked.policy, &asked.cluster).await {
        Ok(chosen) => chosen,
        Err(error) => {
            return PlacementAttempt {
                policy: "unresolved".to_owned(),
                outcome: Err(PlacementError::Kube(error)),
                waits,
            };
        }
    };
    PlacementAttempt {
        policy: chosen.name().to_owned(),
        outcome: decide(
            asked, &chosen, &settings, client, kube, containers, placements, &mut waits,
        )
        .await,
        waits,
    }
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    asked: &PlacementRequest,
    chosen: &ChosenPolicy,
    settings: &ClusterSettings,
    client: &LxdClient,
    kube: &kube::Client,
    containers: &Store<LxdContainer>,
    placements: &Placements,
    waits: &mut Waits,
) -> Result<Decision, PlacementError> {
    let policy = policy::load(kube, chosen).await?;
    let request = &asked.request;
    let shared = placements.cluster(&asked.cluster).await;
    let pending = PendingEntry::join(&shared.pending, &asked.uid, request);
    // Member figures and the namespace's containers are read outside the decision lock: under
    // a busy LXD a read takes seconds, and decisions of the cluster queue on the lock.
    let figures = waits.time("figures", shared.figures.get(client)).await?;
    let mut snapshot = figures.snapshot;
    for member in snapshot.members_mut() {
        member.cordoned = settings.cordoned.contains(&member.name);
    }
    if let (Some(side), Some(nodes)) = (&placements.kube_side, &settings.kubernetes_nodes) {
        // Right after a start the watches may not have listed yet: a decision made then would
        // count no Pods.
        if !waits
            .time("kubernetes", side.synced(KUBE_SIDE_PATIENCE))
            .await
        {
            return Err(PlacementError::KubernetesNotSynced);
        }
        let members = side.member_nodes(nodes, snapshot.members().iter().map(|m| m.name.as_str()));
        let pods = side.pods_by_member(&members);
        for member in snapshot.members_mut() {
            member.pods = pods.get(&member.name).copied().unwrap_or_default();
        }
    }
    // The snapshot counts them per member as they are added. A container decided but not yet
    // shown by LXD is both here (its status names its member) and among the reservations
    // applied below: the snapshot counts it once.
    snapshot.set_placed(
        waits
            .time(
                "containers",
                placed_containers(kube, containers, &request.namespace, &asked.cluster),
            )
            .await
            .map_err(PlacementError::Kube)?,
    );
    waits.time("gathering", pending.gathered()).await;
    waits
        .time("larger_first", pending.wait_for_larger(request))
        .await;
    // The webhook is asked without the decision lock: a slow webhook must not stall the
    // cluster's other placements. It sees the reservations as they were; the decision below is
    // made again on the current ones, so capacity is never given twice.
    let webhook_answer = match &policy.webhook {
        Some(webhook) => {
            let body = {
                let mut state = waits.time("decision_lock", shared.state.lock()).await;
                let mut seen = snapshot.clone();
                state.reservations.release(&asked.uid);
                state.reservations.apply(&mut seen, &figures.visible);
                engine::evaluate(&policy, request, &seen).webhook_request()
            };
            // Its turn in the burst is over: smaller decisions must not wait for its webhook.
            drop(pending);
            match waits
                .time("webhook", placements.webhooks.call(webhook, &body))
                .await
            {
                Ok(answer) => Some((answer, f64::from(webhook.weight))),
                Err(error) if webhook.failure_policy == WebhookFailurePolicy::Ignore => {
                    tracing::warn!(%error, policy = %policy.name, "placement webhook failed; deciding without it (failurePolicy Ignore)");
                    None
                }
                Err(error) => return Err(PlacementError::Webhook(error)),
            }
        }
        None => None,
    };
    let mut state = waits.time("decision_lock", shared.state.lock()).await;
    // This container's own earlier reservation (a retried decision) does not count against it.
    state.reservations.release(&asked.uid);
    state.reservations.apply(&mut snapshot, &figures.visible);
    let mut evaluation = engine::evaluate(&policy, request, &snapshot);
    if let Some((answer, weight)) = &webhook_answer {
        evaluation.apply_webhook(answer, *weight);
    }
    let decision = evaluation
        .decide(state.decisions)
        .map_err(PlacementError::Unschedulable)?;
    state.decisions += 1;
    state
        .reservations
        .reserve(&asked.uid, &decision.member, request);
    Ok(decision)
}

/// The operator's containers of `namespace` with a member, for affinity and spreading (their
/// labels live in the API, not in LXD): from the controller's cache once its first list is in,
/// from the API before (a decision right after a restart must still see every placed one).
async fn placed_containers(
    kube: &kube::Client,
    cache: &Store<LxdContainer>,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<Placed>, kube::Error> {
    // A timeout of zero polls once: ready now or not.
    let cached = tokio::time::timeout(Duration::ZERO, cache.wait_until_ready())
        .await
        .is_ok_and(|ready| ready.is_ok());
    let containers: Vec<Arc<LxdContainer>> = if cached {
        cache.state_filter(|c| c.namespace().as_deref() == Some(namespace))
    } else {
        let api: Api<LxdContainer> = Api::namespaced(kube.clone(), namespace);
        api.list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect()
    };
    Ok(containers
        .iter()
        .filter(|other| other.spec.cluster_ref.name == cluster)
        .filter_map(|other| {
            Some(Placed {
                namespace: namespace.to_owned(),
                name: other.name_any(),
                labels: other.labels().clone(),
                member: other.status.as_ref()?.member.clone()?,
            })
        })
        .collect())
}
