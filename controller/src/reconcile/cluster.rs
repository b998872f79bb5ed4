//! The LxdCluster reconciler: form the cluster from `spec.servers` when it lists them
//! ([`formation`]); connect with the spec's endpoints (or the formed members), Secret and pin; observe the
//! members ([`crate::lxd::observe`], as placement does) into status: capacity, what every
//! instance and what our containers hold, live load; report `Ready`; publish an
//! Event when a member goes offline or comes back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use lxd_operator_crds::cluster::{
    DrainProgress, MemberCapacity, MemberLoad, MemberStatus, MemberUsage,
};
use lxd_operator_crds::quantity::parse_bytes;
use lxd_operator_crds::quota::{Quota, usage_by_namespace};
use lxd_operator_crds::rebalance::RebalanceMode;
use lxd_operator_crds::shared::{CONDITION_DRAINING, CONDITION_EVENT_STREAM, CONDITION_READY};
use lxd_operator_crds::{LxdCluster, LxdClusterStatus, LxdContainer};

mod formation;
mod nodes;
mod rebalance;

/// The status each cluster's reconcile last wrote, by cluster name and uid. A reconcile starts
/// from it when the watch's store still holds an older one: a member event wakes the reconcile
/// at once, before our own write is seen, and a status read back from there would lose what
/// the last reconcile did (a rebalancing round's plan and counts, seen written back over the
/// newer round, which then ran again). Every write of a reconcile carries its `lastSyncTime`.
#[derive(Debug, Default)]
pub struct WrittenStatuses(
    std::sync::Mutex<std::collections::HashMap<String, (String, LxdClusterStatus)>>,
);

impl WrittenStatuses {
    /// The newer of the status last written for `cluster` and the one it carries.
    fn newest(&self, cluster: &LxdCluster) -> LxdClusterStatus {
        let uid = cluster.metadata.uid.clone().unwrap_or_default();
        let carried = cluster.status.clone().unwrap_or_default();
        let written = self
            .0
            .lock()
            .ok()
            .and_then(|w| w.get(&cluster.name_any()).cloned())
            .filter(|(written_uid, _)| *written_uid == uid)
            .map(|(_, status)| status);
        match written {
            Some(written)
                if written.last_sync_time.as_ref().map(|t| t.0)
                    > carried.last_sync_time.as_ref().map(|t| t.0) =>
            {
                written
            }
            _ => carried,
        }
    }

    /// Remembers what was just written for `cluster`.
    pub(super) fn remember(&self, cluster: &LxdCluster, status: &LxdClusterStatus) {
        if let Ok(mut written) = self.0.lock() {
            written.insert(
                cluster.name_any(),
                (
                    cluster.metadata.uid.clone().unwrap_or_default(),
                    status.clone(),
                ),
            );
        }
    }
}

use super::connections::ConnectionError;
use super::context::{Context, Error, EventStreamState};
use super::status::{condition, set_condition, write_status};
use crate::lxd::LxdError;
use crate::lxd::observe::{Allocation, ClusterObservation, MemberObservation};
use crate::telemetry::metrics::QuotaLabels;

/// Reconciles one LxdCluster.
#[tracing::instrument(skip_all, fields(object = %cluster.name_any()))]
pub async fn reconcile(cluster: Arc<LxdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = cluster.name_any();
    let interval = Duration::from_secs(u64::from(cluster.spec.member_sync_interval_seconds));
    let previous = ctx.cluster_statuses.newest(&cluster);
    // Our own status write wakes this reconciler again: skip LXD until the interval is up,
    // unless the spec changed, an LXD event asked for a refresh, or there is no connection yet
    // (after a restart).
    // While servers are still to join, look at them more often.
    let interval = if forming(&cluster) {
        interval.min(FORMING_INTERVAL)
    } else {
        interval
    };
    // Rebalancing rounds see fresh figures: the members are read at each round.
    let interval = match &cluster.spec.rebalance {
        Some(r) if r.mode != RebalanceMode::Off => {
            interval.min(Duration::from_secs(u64::from(r.interval_seconds)))
        }
        _ => interval,
    };
    if let Some(wait) = time_until_next_sync(&cluster, &previous, interval)
        && ctx.connections.get(&name).is_some()
        && !ctx.take_cluster_refresh(&name)
    {
        return Ok(Action::requeue(wait));
    }
    let generation = cluster.metadata.generation;
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.last_sync_time = Some(Time(jiff::Timestamp::now()));
    let mut requeue = interval;
    let mut formation_failed = None;
    if !cluster.spec.servers.is_empty() {
        match formation::form(&cluster, &mut status, &ctx).await {
            Ok(formed) => {
                for (kind, ok, reason, message) in formation::conditions(&cluster, &status) {
                    set_condition(
                        &mut status.conditions,
                        condition(&previous.conditions, kind, ok, reason, message, generation),
                    );
                }
                if formed.step_taken {
                    // The next step at once, whatever wakes this reconciler first.
                    ctx.request_cluster_refresh(&name);
                }
                requeue = formed.requeue.map_or(requeue, |r| r.min(requeue));
            }
            Err(error) => formation_failed = Some(NotReady::Connection(error)),
        }
    }
    let observed = match formation_failed {
        Some(failed) => Err(failed),
        None => observe(&cluster, &ctx).await,
    };
    match observed {
        Ok((members, observation)) => {
            let online = members.iter().filter(|m| m.status == "Online").count();
            let labels = crate::telemetry::metrics::ClusterLabels {
                cluster: name.clone(),
            };
            ctx.metrics
                .members_online
                .get_or_create(&labels)
                .set(i64::try_from(online).unwrap_or(i64::MAX));
            status.member_summary = Some(format!("{online}/{}", members.len()));
            let message = format!("{online} of {} members online", members.len());
            set_condition(
                &mut status.conditions,
                condition(
                    &previous.conditions,
                    CONDITION_READY,
                    true,
                    "Connected",
                    message,
                    generation,
                ),
            );
            nodes::tell_nodes(&cluster, &members, &ctx).await;
            status.members = members;
            if let Some(next) = rebalance::round(&cluster, &mut status, &observation, &ctx).await? {
                requeue = requeue.min(next);
            }
        }
        Err(error) => {
            let reason = error.reason();
            tracing::warn!(cluster = %name, %reason, %error, "LXD cluster not ready");
            set_condition(
                &mut status.conditions,
                condition(
                    &previous.conditions,
                    CONDITION_READY,
                    false,
                    reason,
                    error.to_string(),
                    generation,
                ),
            );
        }
    }
    if let Some(stream) = ctx.event_stream(&name) {
        let (ok, reason, message) = match stream {
            EventStreamState::Connected { endpoint } => (
                true,
                "Connected",
                format!("following the cluster's events through {endpoint}"),
            ),
            EventStreamState::Reconnecting { endpoint, error } => (
                false,
                "Reconnecting",
                format!(
                    "the event stream through {endpoint} broke ({error}); reconnecting (meanwhile drift in LXD is seen at the next periodic check)"
                ),
            ),
        };
        set_condition(
            &mut status.conditions,
            condition(
                &previous.conditions,
                CONDITION_EVENT_STREAM,
                ok,
                reason,
                message,
                generation,
            ),
        );
    }
    let members_changed = announce_member_changes(&cluster, &previous, &status, &ctx).await;
    let containers = ctx
        .containers
        .state_filter(|c| c.spec.cluster_ref.name == name);
    report_drains(&cluster, &mut status, &containers);
    report_quotas(&cluster, &mut status, &containers, &ctx);
    let api: Api<LxdCluster> = Api::all(ctx.client.clone());
    write_status(&api, &cluster, Some(&previous), &status).await?;
    ctx.cluster_statuses.remember(&cluster, &status);
    if members_changed || previous.observed_generation != generation {
        // A member failed or returned, or the spec changed (a drain, a cordon): every
        // container of the cluster looks at its member again, once the watch has the status
        // just written (containers read their cluster there).
        wake_containers_when_seen(ctx.clone(), name.clone(), status.last_sync_time.clone());
    }
    Ok(Action::requeue(requeue))
}

/// How often a cluster whose servers are not all members yet is looked at.
const FORMING_INTERVAL: Duration = Duration::from_secs(10);

/// Whether some server of `spec.servers` is not yet an online member, or one is leaving.
fn forming(cluster: &LxdCluster) -> bool {
    use lxd_operator_crds::cluster::ServerPhase;
    let status = cluster.status.as_ref();
    let missing = cluster.spec.servers.iter().any(|server| {
        !status.is_some_and(|s| s.servers.iter().any(|seen| seen.name == server.name))
    });
    // Servers still to join, and those leaving the cluster.
    missing
        || status.is_some_and(|s| {
            s.servers
                .iter()
                .any(|seen| seen.phase != ServerPhase::Online)
        })
}

/// Wakes the containers of `cluster` once the cluster store holds the status of `synced`
/// (or after two seconds at most).
fn wake_containers_when_seen(ctx: Arc<Context>, cluster: String, synced: Option<Time>) {
    tokio::spawn(async move {
        for _ in 0..40 {
            let seen = ctx
                .cluster(&cluster)
                .and_then(|c| c.status.as_ref().and_then(|s| s.last_sync_time.clone()));
            if seen == synced {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctx.wake_containers_of(&cluster);
    });
}

/// What to do when a reconcile fails: try again soon.
pub fn error_policy(_cluster: Arc<LxdCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "LxdCluster reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn time_until_next_sync(
    cluster: &LxdCluster,
    status: &LxdClusterStatus,
    interval: Duration,
) -> Option<Duration> {
    if status.observed_generation != cluster.metadata.generation {
        return None;
    }
    let last = status.last_sync_time.as_ref()?.0;
    let elapsed = jiff::Timestamp::now().duration_since(last).unsigned_abs();
    interval
        .checked_sub(elapsed)
        .filter(|left| *left > Duration::from_millis(500))
}

/// Why a cluster is not ready, as the `reason` of its Ready condition.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error(transparent)]
    Lxd(#[from] LxdError),
}

impl NotReady {
    fn reason(&self) -> &'static str {
        match self {
            NotReady::Connection(ConnectionError::InvalidSpec { .. }) => "InvalidSpec",
            NotReady::Connection(ConnectionError::Forming) => "Forming",
            NotReady::Connection(ConnectionError::SecretOutOfScope { .. }) => "SecretOutOfScope",
            NotReady::Connection(ConnectionError::Secret { .. } | ConnectionError::Kube(_)) => {
                "SecretUnavailable"
            }
            NotReady::Connection(ConnectionError::Lxd(error)) | NotReady::Lxd(error) => match error
            {
                LxdError::Untrusted { .. } => "Untrusted",
                LxdError::Tls { .. } => "CertificateMismatch",
                LxdError::Config { .. } => "InvalidSpec",
                _ => "Unreachable",
            },
        }
    }
}

async fn observe(
    cluster: &LxdCluster,
    ctx: &Context,
) -> Result<(Vec<MemberStatus>, ClusterObservation), NotReady> {
    let connection = ctx.connections.connect(&ctx.client, cluster).await?;
    let client = &connection.client;
    client.ensure_trusted().await?;
    let observation = client.observe_members().await?;
    let now = Time(jiff::Timestamp::now());
    let previous: BTreeMap<&str, &MemberStatus> = cluster
        .status
        .iter()
        .flat_map(|s| s.members.iter())
        .map(|m| (m.name.as_str(), m))
        .collect();
    let members = observation
        .members
        .iter()
        .map(|observed| {
            member_status(
                observed,
                previous.get(observed.member.server_name.as_str()).copied(),
                &now,
            )
        })
        .collect();
    Ok((members, observation))
}

/// A member's status from its observation; an offline member keeps the capacity and load last
/// seen.
fn member_status(
    observed: &MemberObservation,
    previous: Option<&MemberStatus>,
    now: &Time,
) -> MemberStatus {
    let member = &observed.member;
    let online = observed.is_online();
    let usage = |allocation: &Allocation| MemberUsage {
        cpus: allocation.cpu,
        memory_bytes: allocation.memory_bytes,
        instances: allocation.instances,
    };
    let (capacity, load) = if online {
        let averages = &observed.load_averages;
        let load = MemberLoad {
            load1: averages.first().copied(),
            load5: averages.get(1).copied(),
            load15: averages.get(2).copied(),
            memory_used_bytes: observed.resources.as_ref().map(|r| r.memory.used),
            instance_cpu_cores: None,
            instance_memory_bytes: Some(observed.instance_memory_used_bytes as u64),
            instances: Some(observed.allocated.instances),
        };
        (
            observed.resources.as_ref().map(|r| MemberCapacity {
                cpus: r.cpu.total,
                memory_bytes: r.memory.total,
            }),
            Some(load),
        )
    } else {
        (
            previous.and_then(|p| p.capacity.clone()),
            previous
                .and_then(|p| p.load.clone())
                .map(|load| MemberLoad {
                    instances: Some(observed.allocated.instances),
                    ..load
                }),
        )
    };
    MemberStatus {
        name: member.server_name.clone(),
        url: member.url.clone(),
        status: member.status.clone(),
        message: (!member.message.is_empty()).then(|| member.message.clone()),
        roles: member.roles.clone(),
        failure_domain: (!member.failure_domain.is_empty()).then(|| member.failure_domain.clone()),
        architecture: (!member.architecture.is_empty()).then(|| member.architecture.clone()),
        groups: member.groups.clone(),
        labels: member.labels(),
        capacity,
        allocated: Some(usage(&observed.allocated)),
        managed: Some(usage(&observed.managed)),
        load,
        // Offline from the first sight: the grace period of `Reschedule` counts from then.
        last_seen: if online {
            Some(now.clone())
        } else {
            previous
                .and_then(|p| p.last_seen.clone())
                .or_else(|| Some(now.clone()))
        },
        drain: None,
    }
}

/// Publishes an Event for each member whose status changed; says whether one did.
async fn announce_member_changes(
    cluster: &LxdCluster,
    previous: &LxdClusterStatus,
    status: &LxdClusterStatus,
    ctx: &Context,
) -> bool {
    let mut changed = false;
    let before: BTreeMap<&str, &str> = previous
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.status.as_str()))
        .collect();
    for member in &status.members {
        let Some(&was) = before.get(member.name.as_str()) else {
            continue;
        };
        if was == member.status {
            continue;
        }
        changed = true;
        let (type_, reason) = if member.status == "Online" {
            (EventType::Normal, "MemberOnline")
        } else {
            (EventType::Warning, "MemberOffline")
        };
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(format!(
                "member {} went from {was} to {}",
                member.name, member.status
            )),
            action: "SyncMembers".to_owned(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!(%error, "cannot publish an Event");
        }
    }
    changed
}

/// Each drained member's progress, from the containers as the watch last saw them.
/// What each namespace with a quota holds, into status and metrics.
fn report_quotas(
    cluster: &LxdCluster,
    status: &mut LxdClusterStatus,
    containers: &[Arc<LxdContainer>],
    ctx: &Context,
) {
    let name = cluster.name_any();
    let Some(quotas) = &cluster.spec.quotas else {
        status.quotas.clear();
        return;
    };
    status.quotas = usage_by_namespace(
        quotas,
        containers.iter().map(|c| {
            (
                c.metadata.namespace.as_deref().unwrap_or("default"),
                &c.spec,
            )
        }),
    );
    for namespace in &status.quotas {
        let figures = |quota: &Quota| {
            [
                ("containers", quota.containers.map(f64::from)),
                ("cpu", quota.cpu),
                (
                    "memory",
                    quota
                        .memory
                        .as_ref()
                        .and_then(|m| parse_bytes(m).ok())
                        .map(|bytes| bytes as f64),
                ),
            ]
        };
        for (family, quota) in [
            (&ctx.metrics.quota_hard, &namespace.hard),
            (&ctx.metrics.quota_used, &namespace.used),
        ] {
            for (resource, value) in figures(quota) {
                let labels = QuotaLabels {
                    cluster: name.clone(),
                    namespace: namespace.namespace.clone(),
                    resource: resource.to_owned(),
                };
                match value {
                    Some(value) => {
                        family.get_or_create(&labels).set(value);
                    }
                    None => {
                        family.remove(&labels);
                    }
                }
            }
        }
    }
}

fn report_drains(
    cluster: &LxdCluster,
    status: &mut LxdClusterStatus,
    containers: &[Arc<LxdContainer>],
) {
    let emptied = cluster.members_to_empty();
    for member in &mut status.members {
        member.drain = emptied
            .contains(&member.name)
            .then(|| drain_progress(&member.name, containers));
    }
}

/// How far the drain of `member` is, counted over the cluster's containers.
fn drain_progress(member: &str, containers: &[Arc<LxdContainer>]) -> DrainProgress {
    let mut progress = DrainProgress::default();
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for container in containers {
        let Some(status) = &container.status else {
            continue;
        };
        let moving_off = status.moving.as_ref().is_some_and(|m| m.from == member);
        if status.member.as_deref() != Some(member) && !moving_off {
            continue;
        }
        progress.remaining += 1;
        if moving_off {
            progress.moving += 1;
        }
        if let Some(draining) = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_DRAINING && c.status == "False")
        {
            progress.failed += 1;
            *reasons.entry(draining.reason.clone()).or_default() += 1;
        }
    }
    progress.message = if progress.remaining == 0 {
        "drained".to_owned()
    } else if reasons.is_empty() {
        format!("{} of our containers still on it", progress.remaining)
    } else {
        let counted: Vec<String> = reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        format!(
            "{} of our containers still on it; staying: {}",
            progress.remaining,
            counted.join(", ")
        )
    };
    progress
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::{LxdContainerStatus, MoveStatus};
    use lxd_operator_crds::shared::Condition;

    use super::*;

    fn on(member: &str, moving: bool, stuck: Option<&str>) -> Arc<LxdContainer> {
        let mut container = LxdContainer::builder("c").build();
        container.status = Some(LxdContainerStatus {
            member: Some(member.to_owned()),
            moving: moving.then(|| MoveStatus {
                from: member.to_owned(),
                to: "node1".to_owned(),
                ..MoveStatus::default()
            }),
            conditions: stuck
                .map(|reason| Condition {
                    type_: CONDITION_DRAINING.to_owned(),
                    status: "False".to_owned(),
                    reason: reason.to_owned(),
                    message: String::new(),
                    last_transition_time: Time(jiff::Timestamp::now()),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..LxdContainerStatus::default()
        });
        Arc::new(container)
    }

    #[test]
    fn a_drain_counts_what_is_left_moving_and_stuck_with_reasons() {
        let containers = vec![
            on("node2", true, None),
            on("node2", false, Some("NoMemberFits")),
            on("node2", false, Some("NoMemberFits")),
            on("node2", false, None),
            on("node3", false, None),
        ];
        let progress = drain_progress("node2", &containers);
        assert_eq!(
            (progress.remaining, progress.moving, progress.failed),
            (4, 1, 2)
        );
        assert_eq!(
            progress.message,
            "4 of our containers still on it; staying: 2 NoMemberFits"
        );
        assert_eq!(drain_progress("node1", &containers).message, "drained");
    }
}
