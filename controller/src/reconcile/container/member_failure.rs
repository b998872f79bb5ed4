//! A container whose member went offline: it waits for the member (`onMemberFailure: Wait`,
//! or pinned with `target`), or, after the grace period, is created anew elsewhere
//! (`Reschedule`) under a name of its own, the old instance recorded as left behind. A left
//! behind instance is stopped and deleted as soon as its member is seen online again, before
//! anything else is done for the container, so that two incarnations do not run for longer
//! than it takes to notice the member's return.
//!
//! [`judge`] decides (pure); [`reschedule`] and [`remove_left_behind`] act.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::EventType;
use lxd_operator_crds::cluster::MemberStatus;
use lxd_operator_crds::container::{
    ContainerPhase, LeftBehindInstance, MemberFailurePolicy, Placement,
};
use lxd_operator_crds::shared::CONDITION_SCHEDULED;
use lxd_operator_crds::{LxdCluster, LxdContainer};

use super::super::context::Context;
use super::desired::DesiredInstance;
use super::failure::Failure;
use super::report::{StatusWriter, publish};
use super::{OPERATION_TIMEOUT, STOP_TIMEOUT};
use crate::lxd::types::StateAction;
use crate::lxd::{LxdClient, LxdError};

/// LXD's status of a member that does not answer its heartbeats.
const OFFLINE: &str = "Offline";
/// How often a container waiting for its member looks again (the member's return also wakes
/// it at once).
const WAIT_RECHECK: Duration = Duration::from_secs(15);

/// What a container does about its member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MemberVerdict {
    /// The member is not known to be offline: go on.
    Proceed,
    /// Wait for the member; the message says why, for the Ready condition.
    Wait { message: String, retry: Duration },
    /// Create the container anew on another member; the reason is recorded.
    Reschedule { reason: String },
}

/// Decides what a container on `member` does, given the member as the cluster's status last
/// saw it. `grace` is the container's own grace period, or the cluster's.
pub(super) fn judge(
    member: &str,
    observed: Option<&MemberStatus>,
    placement: &Placement,
    grace: Duration,
    now: Timestamp,
) -> MemberVerdict {
    let Some(observed) = observed.filter(|m| m.status == OFFLINE) else {
        return MemberVerdict::Proceed;
    };
    let offline_for = observed
        .last_seen
        .as_ref()
        .map(|seen| now.duration_since(seen.0).unsigned_abs())
        .unwrap_or_default();
    let seen = observed.last_seen.as_ref().map_or_else(
        || "never seen online".to_owned(),
        |_| format!("last seen online {} s ago", offline_for.as_secs()),
    );
    if placement.target.as_deref() == Some(member) {
        return MemberVerdict::Wait {
            message: format!(
                "member {member} is offline ({seen}); the container is pinned there (placement.target) and waits for it whatever onMemberFailure says"
            ),
            retry: WAIT_RECHECK,
        };
    }
    match placement.on_member_failure {
        MemberFailurePolicy::Wait => MemberVerdict::Wait {
            message: format!(
                "member {member} is offline ({seen}); onMemberFailure is Wait: the container waits for it"
            ),
            retry: WAIT_RECHECK,
        },
        MemberFailurePolicy::Reschedule => match grace.checked_sub(offline_for) {
            Some(left) if !left.is_zero() => MemberVerdict::Wait {
                message: format!(
                    "member {member} is offline ({seen}); the container is created anew elsewhere in {} s unless the member returns (grace period {} s)",
                    left.as_secs().max(1),
                    grace.as_secs()
                ),
                retry: (left + Duration::from_millis(500)).min(WAIT_RECHECK),
            },
            _ => MemberVerdict::Reschedule {
                reason: format!(
                    "member {member} offline for {} s (grace period {} s)",
                    offline_for.as_secs(),
                    grace.as_secs()
                ),
            },
        },
    }
}

/// The grace period for this container: its own, else its cluster's.
pub(super) fn grace_period(placement: &Placement, cluster: &LxdCluster) -> Duration {
    Duration::from_secs(u64::from(
        placement
            .member_failure_grace_period_seconds
            .unwrap_or(cluster.spec.member_failure_grace_period_seconds),
    ))
}

/// The member `name` as the cluster's status last saw it.
pub(super) fn member_status<'c>(cluster: &'c LxdCluster, name: &str) -> Option<&'c MemberStatus> {
    cluster
        .status
        .as_ref()?
        .members
        .iter()
        .find(|m| m.name == name)
}

/// Looks at the container's member and waits, reschedules, or lets it go on.
pub(super) async fn check_member(
    desired: &mut DesiredInstance,
    cluster: &LxdCluster,
    api: &Api<LxdContainer>,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<(), Failure> {
    let Some(member) = status.status.member.clone() else {
        return Ok(());
    };
    let default_placement = Placement::default();
    let placement = status
        .container
        .spec
        .placement
        .as_ref()
        .unwrap_or(&default_placement);
    let verdict = judge(
        &member,
        member_status(cluster, &member),
        placement,
        grace_period(placement, cluster),
        Timestamp::now(),
    );
    match verdict {
        MemberVerdict::Proceed => Ok(()),
        MemberVerdict::Wait { message, retry } => Err(Failure::Waiting {
            phase: ContainerPhase::Unknown,
            reason: "MemberOffline",
            message,
            retry,
        }),
        MemberVerdict::Reschedule { reason } => {
            reschedule(desired, &member, reason, api, ctx, status).await
        }
    }
}

/// Records the instance on `member` as left behind, takes the next incarnation and clears the
/// placement, and writes that down before anything is created: a restarted operator goes on
/// from there and never makes two new instances.
async fn reschedule(
    desired: &mut DesiredInstance,
    member: &str,
    reason: String,
    api: &Api<LxdContainer>,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<(), Failure> {
    // The watch may lag behind our own last write: decide on the object as it is now.
    let name = status.container.metadata.name.clone().unwrap_or_default();
    let fresh = api.get(&name).await?;
    let fresh_status = fresh.status.unwrap_or_default();
    if fresh_status.incarnation != status.previous.incarnation
        || fresh_status.member.as_deref() != Some(member)
    {
        return Err(Failure::Waiting {
            phase: status.status.phase.unwrap_or(ContainerPhase::Unknown),
            reason: "MemberOffline",
            message: "the container's status changed meanwhile; looking again".to_owned(),
            retry: Duration::from_secs(1),
        });
    }
    let left = desired.name.clone();
    let incarnation = status.status.incarnation.unwrap_or(0).saturating_add(1);
    desired.reincarnate(incarnation);
    let state = &mut status.status;
    state.left_behind.retain(|l| l.instance_name != left);
    state.left_behind.push(LeftBehindInstance {
        instance_name: left.clone(),
        member: member.to_owned(),
        reason: reason.clone(),
        since: Some(Time(Timestamp::now())),
    });
    state.incarnation = Some(incarnation);
    state.member = None;
    state.instance_name = Some(desired.name.clone());
    state.placement = None;
    state.ipv4.clear();
    state.ipv6.clear();
    let message = format!(
        "{reason}: instance {left} left behind there; creating {} on another member",
        desired.name
    );
    status.condition(CONDITION_SCHEDULED, false, "Rescheduled", message.clone());
    status.not_ready(ContainerPhase::Pending, "Rescheduled", message.clone());
    status.write().await?;
    // What is written is where converging starts from.
    status.previous = status.status.clone();
    ctx.placements
        .release(&desired.placement.cluster, desired.uid())
        .await;
    ctx.index_instance(&desired.placement.cluster, &desired.name, status.container);
    ctx.metrics.observe_reschedule(&desired.placement.cluster);
    tracing::warn!(container = %name, instance = %left, %member, %reason, "rescheduling");
    publish(
        ctx,
        status.container,
        EventType::Warning,
        "Rescheduled",
        message,
    )
    .await;
    Ok(())
}

/// Deletes each instance left behind on a member that is online again (stopping it first;
/// LXD restarts what ran when its daemon returns). Entries on members still offline stay;
/// one whose member left the cluster, or whose instance is gone or not ours, is dropped.
pub(super) async fn remove_left_behind(
    cluster: &LxdCluster,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<(), Failure> {
    let uid = status.container.metadata.uid.clone().unwrap_or_default();
    let mut kept = Vec::new();
    let mut entries = std::mem::take(&mut status.status.left_behind).into_iter();
    while let Some(entry) = entries.next() {
        let observed = member_status(cluster, &entry.member);
        let known = cluster
            .status
            .as_ref()
            .is_some_and(|s| !s.members.is_empty());
        match observed {
            Some(member) if member.status == OFFLINE => kept.push(entry),
            None if !known => kept.push(entry),
            None => {}
            Some(_) => {
                let on_member = client.on_member(&entry.member);
                match delete_if_ours(&on_member, &entry.instance_name, &uid).await {
                    Ok(true) => {
                        publish(
                            ctx,
                            status.container,
                            EventType::Normal,
                            "LeftBehindDeleted",
                            format!(
                                "instance {} left behind on {} is deleted now that the member is back",
                                entry.instance_name, entry.member
                            ),
                        )
                        .await;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        kept.push(entry);
                        kept.extend(entries);
                        status.status.left_behind = kept;
                        return Err(Failure::Lxd(error));
                    }
                }
            }
        }
    }
    status.status.left_behind = kept;
    Ok(())
}

/// Stops (forced: its data is lost to the container anyway) and deletes the instance `name`
/// if it carries `uid`; says whether it did.
async fn delete_if_ours(client: &LxdClient, name: &str, uid: &str) -> Result<bool, LxdError> {
    let instance = match client.instance(name).await {
        Ok(found) => found.value,
        Err(LxdError::NotFound { .. }) => return Ok(false),
        Err(error) => return Err(error),
    };
    if instance.owner_uid() != Some(uid) {
        return Ok(false);
    }
    if instance.status != "Stopped" {
        let handle = client
            .change_state(name, StateAction::Stop, Some(STOP_TIMEOUT), true)
            .await?;
        match client.wait(&handle, OPERATION_TIMEOUT).await {
            Ok(_) | Err(LxdError::OperationFailed { .. } | LxdError::Invalid { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    let handle = client.delete_instance(name).await?;
    client.wait(&handle, OPERATION_TIMEOUT).await?;
    tracing::info!(instance = name, member = %instance.location, "deleted an instance left behind");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(seen_secs_ago: Option<i64>, now: Timestamp) -> MemberStatus {
        MemberStatus {
            name: "node2".into(),
            status: OFFLINE.into(),
            last_seen: seen_secs_ago.map(|ago| Time(now - jiff::SignedDuration::from_secs(ago))),
            ..MemberStatus::default()
        }
    }

    fn placement(policy: MemberFailurePolicy, target: Option<&str>) -> Placement {
        Placement {
            on_member_failure: policy,
            target: target.map(str::to_owned),
            ..Placement::default()
        }
    }

    const GRACE: Duration = Duration::from_secs(20);

    #[test]
    fn an_online_or_unknown_member_lets_the_container_go_on() {
        let now = Timestamp::now();
        let online = MemberStatus {
            status: "Online".into(),
            ..offline(Some(1), now)
        };
        let reschedule = placement(MemberFailurePolicy::Reschedule, None);
        for observed in [Some(&online), None] {
            assert_eq!(
                judge("node2", observed, &reschedule, GRACE, now),
                MemberVerdict::Proceed
            );
        }
    }

    #[test]
    fn reschedule_waits_out_the_grace_period_counted_from_the_last_sight_online() {
        let now = Timestamp::now();
        let reschedule = placement(MemberFailurePolicy::Reschedule, None);
        let MemberVerdict::Wait { message, retry } = judge(
            "node2",
            Some(&offline(Some(5), now)),
            &reschedule,
            GRACE,
            now,
        ) else {
            panic!("waits within the grace period");
        };
        assert!(message.contains("in 15 s"), "{message}");
        assert!(retry <= Duration::from_secs(15));
        let verdict = judge(
            "node2",
            Some(&offline(Some(21), now)),
            &reschedule,
            GRACE,
            now,
        );
        assert!(
            matches!(&verdict, MemberVerdict::Reschedule { reason } if reason.contains("offline for 21 s (grace period 20 s)")),
            "{verdict:?}"
        );
    }

    #[test]
    fn wait_and_pinned_containers_wait_whatever_the_time_and_say_why() {
        let now = Timestamp::now();
        let long_gone = offline(Some(3600), now);
        let wait = placement(MemberFailurePolicy::Wait, None);
        let pinned = placement(MemberFailurePolicy::Reschedule, Some("node2"));
        for (policy, says) in [
            (&wait, "onMemberFailure is Wait"),
            (&pinned, "pinned there"),
        ] {
            match judge("node2", Some(&long_gone), policy, GRACE, now) {
                MemberVerdict::Wait { message, .. } => assert!(message.contains(says), "{message}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
