//! The placement engine wired to the world: the policy a container names (or its cluster's
//! default, or `least-loaded`), a snapshot of the members read from LXD, the operator's own
//! containers from the API (for affinity and spreading), reservations, and the policy's webhook
//! over HTTP. The decision itself is [`crate::placement`]'s, which does no I/O.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use lxd_operator_crds::container::PlacementStrategy;
use lxd_operator_crds::policy::WebhookFailurePolicy;
use lxd_operator_crds::{LxdCluster, LxdContainer, LxdPlacementPolicy};

use super::cluster::{requested_cpu, requested_memory};
use crate::lxd::{LxdClient, LxdError};
use crate::placement::model::{Member, Placed, Request, Resources, Snapshot};
use crate::placement::policy::{self, Policy};
use crate::placement::reservations::Reservations;
use crate::placement::webhook::WebhookResponse;
use crate::placement::{self as engine, Decision};
use crate::quantity::parse_bytes;

/// Per-cluster placement state: reservations and the round-robin counter. Its lock is held
/// from snapshot to decision, which serializes the decisions of one cluster.
#[derive(Debug, Default)]
pub struct ClusterPlacement {
    reservations: Reservations,
    decisions: u64,
}

/// The members as last read, when, and the uids LXD showed then.
type Figures = (std::time::Instant, Snapshot, HashSet<String>);

/// How long member figures read from LXD are reused. They change slowly, and decisions made
/// since are counted by the reservations; reading them for every decision of a burst would make
/// placement, which is serialized, the bottleneck of a rollout.
const FIGURES_FOR: Duration = Duration::from_secs(10);

/// How long a decision waits for others of the same burst before it is made: reconciles of
/// containers applied together arrive within a few milliseconds of each other.
const BURST_WINDOW: Duration = Duration::from_millis(100);

/// The longest a decision waits for larger ones pending beside it.
const BURST_PATIENCE: Duration = Duration::from_secs(10);

/// Containers of one cluster waiting for their decision, by uid. A decision waits while a
/// larger one is pending, so that a burst is decided largest first
/// ([`engine::burst::burst_order`]), as the engine's simulations show it balances best.
#[derive(Debug, Default)]
struct Pending {
    waiting: std::sync::Mutex<std::collections::BTreeMap<String, Request>>,
    decided: tokio::sync::Notify,
}

impl Pending {
    fn larger_than(&self, uid: &str, request: &Request) -> bool {
        self.waiting.lock().is_ok_and(|waiting| {
            waiting.iter().any(|(other_uid, other)| {
                other_uid != uid
                    && engine::burst::burst_order(other, request) == std::cmp::Ordering::Less
            })
        })
    }
}

/// A container's place among the pending decisions; leaving it (decided, or failed) wakes the
/// others.
struct PendingEntry<'a> {
    pending: &'a Pending,
    uid: String,
}

impl<'a> PendingEntry<'a> {
    fn join(pending: &'a Pending, uid: &str, request: &Request) -> Self {
        if let Ok(mut waiting) = pending.waiting.lock() {
            waiting.insert(uid.to_owned(), request.clone());
        }
        PendingEntry {
            pending,
            uid: uid.to_owned(),
        }
    }

    /// Waits until no larger decision is pending (or patience runs out).
    async fn wait_for_larger(&self, request: &Request) {
        let deadline = tokio::time::Instant::now() + BURST_PATIENCE;
        loop {
            let decided = self.pending.decided.notified();
            tokio::pin!(decided);
            decided.as_mut().enable();
            if !self.pending.larger_than(&self.uid, request) {
                return;
            }
            if tokio::time::timeout_at(deadline, decided).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.pending.waiting.lock() {
            waiting.remove(&self.uid);
        }
        self.pending.decided.notify_waiters();
    }
}

/// One cluster's placement state and its pending decisions.
#[derive(Debug, Default)]
struct ClusterShared {
    state: tokio::sync::Mutex<ClusterPlacement>,
    /// Held while the figures are read, so that a burst reads them once, not once per
    /// container.
    figures: tokio::sync::Mutex<Option<Figures>>,
    pending: Pending,
}

/// Placement state of every cluster.
#[derive(Debug, Default)]
pub struct Placements {
    clusters: tokio::sync::Mutex<HashMap<String, Arc<ClusterShared>>>,
}

impl Placements {
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
    #[error("{0}")]
    Unschedulable(String),
    /// The named policy does not exist or is invalid.
    #[error("{0}")]
    InvalidPolicy(String),
    /// The webhook failed and the policy says Fail.
    #[error("placement webhook: {0}")]
    Webhook(String),
    /// Reading the cluster failed.
    #[error(transparent)]
    Lxd(#[from] LxdError),
    /// Reading the API failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The policy a container is placed by.
async fn resolve_policy(
    kube: &kube::Client,
    container: &LxdContainer,
) -> Result<Policy, PlacementError> {
    let placement = container.spec.placement.clone().unwrap_or_default();
    let policy_name = match (&placement.policy, placement.strategy) {
        (Some(_), Some(_)) => {
            return Err(PlacementError::InvalidPolicy(
                "spec.placement: set at most one of policy and strategy".to_owned(),
            ));
        }
        (Some(name), None) => Some(name.clone()),
        (None, Some(strategy)) => return Ok(policy::strategy(strategy)),
        (None, None) => {
            let clusters: Api<LxdCluster> = Api::all(kube.clone());
            clusters
                .get_opt(&container.spec.cluster_ref.name)
                .await?
                .and_then(|c| c.spec.default_placement_policy)
        }
    };
    let Some(name) = policy_name else {
        return Ok(policy::strategy(PlacementStrategy::LeastLoaded));
    };
    let policies: Api<LxdPlacementPolicy> = Api::all(kube.clone());
    let found = policies.get_opt(&name).await?.ok_or_else(|| {
        PlacementError::InvalidPolicy(format!("LxdPlacementPolicy {name} does not exist"))
    })?;
    policy::from_spec(&name, &found.spec)
        .map_err(|e| PlacementError::InvalidPolicy(format!("LxdPlacementPolicy {name}: {e}")))
}

/// The container's request, as placement reads it.
pub fn request_of(container: &LxdContainer) -> Request {
    let resources = container.spec.resources.clone().unwrap_or_default();
    Request {
        namespace: container.namespace().unwrap_or_default(),
        name: container.name_any(),
        labels: container.labels().clone(),
        resources: Resources {
            cpu: resources.cpu.unwrap_or(0.0),
            memory: resources
                .memory
                .as_ref()
                .and_then(|m| parse_bytes(m).ok())
                .map_or(0.0, |b| b as f64),
        },
        architecture: None,
        placement: container.spec.placement.clone().unwrap_or_default(),
    }
}

/// Reads the members and what is on them from LXD; returns them and the uids LXD shows.
async fn member_figures(client: &LxdClient) -> Result<(Snapshot, HashSet<String>), PlacementError> {
    let members = client.members().await?;
    let instances = client.instances().await?;
    let mut snapshot = Snapshot::default();
    // Each member's figures are read at once, not one member after the other.
    let live = futures::future::join_all(members.iter().map(|member| async move {
        if member.status != "Online" {
            return (None, Vec::new(), None);
        }
        let (resources, usage, load) = futures::join!(
            client.member_resources(&member.server_name),
            client.member_instance_metrics(&member.server_name),
            client.member_state(&member.server_name),
        );
        (
            resources.ok(),
            usage.unwrap_or_default(),
            load.ok().flatten(),
        )
    }))
    .await;
    for (member, (resources, usage, load)) in members.iter().zip(live) {
        let here: Vec<_> = instances
            .iter()
            .filter(|i| i.location == member.server_name)
            .collect();
        snapshot.members.push(Member {
            name: member.server_name.clone(),
            status: member.status.clone(),
            architecture: member.architecture.clone(),
            failure_domain: if member.failure_domain.is_empty() {
                "default".to_owned()
            } else {
                member.failure_domain.clone()
            },
            groups: member.groups.clone(),
            labels: member
                .config
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("user.").map(|l| (l.to_owned(), v.clone())))
                .collect(),
            capacity: resources
                .as_ref()
                .map_or_else(Resources::default, |r| Resources {
                    cpu: f64::from(r.cpu.total),
                    memory: r.memory.total as f64,
                }),
            unlimited: (
                u32::try_from(here.iter().filter(|i| requested_cpu(i) <= 0.0).count())
                    .unwrap_or(u32::MAX),
                u32::try_from(here.iter().filter(|i| requested_memory(i) == 0).count())
                    .unwrap_or(u32::MAX),
            ),
            allocated: Resources {
                cpu: here.iter().map(|i| requested_cpu(i)).sum(),
                memory: here.iter().map(|i| requested_memory(i) as f64).sum(),
            },
            usage: Resources {
                cpu: 0.0,
                memory: usage.iter().map(|m| m.memory_used_bytes).sum(),
            },
            load1: load.and_then(|s| s.sysinfo.load_averages.first().copied()),
            instances: u32::try_from(here.len()).unwrap_or(u32::MAX),
        });
    }
    let visible = instances
        .iter()
        .filter_map(|i| i.owner_uid().map(str::to_owned))
        .collect();
    Ok((snapshot, visible))
}

/// The operator's containers of `namespace` with a member, for affinity and spreading (their
/// labels live in the API, not in LXD).
async fn placed_containers(
    kube: &kube::Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<Placed>, PlacementError> {
    let containers: Api<LxdContainer> = Api::namespaced(kube.clone(), namespace);
    let mut placed = Vec::new();
    for other in containers.list(&ListParams::default()).await?.items {
        if other.spec.cluster_ref.name != cluster {
            continue;
        }
        if let Some(member) = other.status.as_ref().and_then(|s| s.member.clone()) {
            placed.push(Placed {
                namespace: namespace.to_owned(),
                name: other.name_any(),
                labels: other.labels().clone(),
                member,
            });
        }
    }
    Ok(placed)
}

/// Chooses a member for `container` and reserves it. Returns the decision and the policy name.
pub async fn place(
    container: &LxdContainer,
    client: &LxdClient,
    kube: &kube::Client,
    placements: &Placements,
) -> Result<(Decision, String), PlacementError> {
    let cluster = &container.spec.cluster_ref.name;
    let uid = container.uid().unwrap_or_default();
    let policy = resolve_policy(kube, container).await?;
    let request = request_of(container);
    let shared = placements.cluster(cluster).await;
    let state = &shared.state;
    let pending = PendingEntry::join(&shared.pending, &uid, &request);
    let gathered = tokio::time::Instant::now() + BURST_WINDOW;
    // Member figures and the namespace's containers are read outside the lock: under a busy LXD
    // a read takes seconds, and decisions of the cluster queue on the lock.
    let (_, members, visible) = {
        let mut figures = shared.figures.lock().await;
        match figures
            .as_ref()
            .filter(|(read, _, _)| read.elapsed() < FIGURES_FOR)
        {
            Some(fresh) => fresh.clone(),
            None => {
                let (members, visible) = member_figures(client).await?;
                let fresh = (std::time::Instant::now(), members, visible);
                *figures = Some(fresh.clone());
                fresh
            }
        }
    };
    let mut snapshot = members;
    snapshot.placed = placed_containers(kube, &request.namespace, cluster).await?;
    tokio::time::sleep_until(gathered).await;
    pending.wait_for_larger(&request).await;
    let mut state = state.lock().await;
    // This container's own earlier reservation (a retried decision) does not count against it.
    state.reservations.release(&uid);
    state.reservations.apply(&mut snapshot, &visible);
    let mut evaluation = engine::evaluate(&policy, &request, &snapshot);
    if let Some(webhook) = &policy.webhook {
        match call_webhook(webhook, &evaluation.webhook_request(&request, &snapshot)).await {
            Ok(answer) => evaluation.apply_webhook(&answer, f64::from(webhook.weight)),
            Err(error) if webhook.failure_policy == WebhookFailurePolicy::Ignore => {
                tracing::warn!(%error, policy = %policy.name, "placement webhook failed; deciding without it (failurePolicy Ignore)");
            }
            Err(error) => return Err(PlacementError::Webhook(error)),
        }
    }
    let decision = evaluation
        .decide(state.decisions)
        .map_err(|e| PlacementError::Unschedulable(e.message))?;
    state.decisions += 1;
    state.reservations.reserve(&uid, &decision.member, &request);
    Ok((decision, policy.name))
}

async fn call_webhook(
    webhook: &lxd_operator_crds::policy::WebhookExtender,
    body: &engine::webhook::WebhookRequest,
) -> Result<WebhookResponse, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(bundle) = &webhook.ca_bundle {
        use rustls_pki_types::pem::PemObject;
        for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            let certificate = certificate.map_err(|e| format!("caBundle: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("caBundle: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_millis(u64::from(webhook.timeout_millis)))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(&webhook.url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{}: {e}", webhook.url))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{} answered {status}", webhook.url));
    }
    response
        .json::<WebhookResponse>()
        .await
        .map_err(|e| format!("{}: unreadable answer: {e}", webhook.url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::plugins::testing::request;

    #[tokio::test]
    async fn a_smaller_decision_waits_for_a_larger_one_pending_beside_it() {
        let pending = Arc::new(Pending::default());
        let small = request(0.5, 0.5);
        let large = request(2.0, 4.0);
        let large_entry = PendingEntry::join(&pending, "large", &large);
        let waiter = {
            let pending = pending.clone();
            tokio::spawn(async move {
                let entry = PendingEntry::join(&pending, "small", &small);
                entry.wait_for_larger(&small).await;
                tokio::time::Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the small one waits");
        // The large one does not wait for the small one.
        large_entry.wait_for_larger(&large).await;
        let decided = tokio::time::Instant::now();
        drop(large_entry);
        let went = waiter.await.unwrap();
        assert!(went >= decided);
    }
}
