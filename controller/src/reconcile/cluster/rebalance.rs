//! The cluster's rebalancing round (`spec.rebalance`): once per interval, and only when the
//! moves of the previous round are over, the planner ([`crate::placement::rebalance`]) is given
//! the members as placement sees them and the containers that may move; its plan goes into
//! `status.rebalance`. In `On` mode each planned container is asked to move (the annotations
//! [`MOVE_TO_ANNOTATION`] and [`MOVE_REQUESTED_AT_ANNOTATION`]): its own reconciler carries the
//! move out as it does a drain's (a move slot, its set's budget, crash-safe through
//! `status.moving`), with the Events and metrics of moves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use lxd_operator_crds::rebalance::{
    MOVE_REQUESTED_AT_ANNOTATION, MOVE_TO_ANNOTATION, PlannedMove, RebalanceMode, RebalancePolicy,
    RebalanceSettings, RebalanceStatus,
};
use lxd_operator_crds::{LxdCluster, LxdClusterStatus, LxdContainer, LxdContainerSet};

use super::super::container::budget::disruptions_left;
use super::super::container::desired::DesiredInstance;
use super::super::container::moves::{MOVE_REQUEST_HOLDS_FOR, move_request};
use super::super::container::placement::figures::Figures;
use super::super::container::placement::policy::{ChosenPolicy, load};
use super::super::context::Context;
use super::super::set::children::is_ready;
use crate::lxd::observe::ClusterObservation;
use crate::placement::policy::Policy;
use crate::placement::rebalance::{self, Movable, Settings};

/// Runs a round if one is due; returns how soon the next one is (for the requeue).
pub(super) async fn round(
    cluster: &LxdCluster,
    status: &mut LxdClusterStatus,
    observation: &ClusterObservation,
    ctx: &Context,
) -> Result<Option<Duration>, kube::Error> {
    let Some(settings) = cluster
        .spec
        .rebalance
        .as_ref()
        .filter(|s| s.mode != RebalanceMode::Off)
    else {
        status.rebalance = None;
        return Ok(None);
    };
    let interval = Duration::from_secs(u64::from(settings.interval_seconds));
    let previous = status.rebalance.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    if previous.mode == settings.mode
        && let Some(last) = &previous.last_round_time
    {
        let elapsed = now.duration_since(last.0).unsigned_abs();
        // Half a second early is on time: the requeue that brings the round is not exact.
        if elapsed + Duration::from_millis(500) < interval {
            return Ok(Some(interval - elapsed));
        }
    }
    // Until the first list is in, the store cannot tell which containers exist or move.
    let listed = tokio::time::timeout(Duration::ZERO, ctx.containers.wait_until_ready())
        .await
        .is_ok_and(|ready| ready.is_ok());
    if !listed {
        return Ok(Some(Duration::from_secs(1)));
    }
    let name = cluster.name_any();
    let containers = ctx
        .containers
        .state_filter(|c| c.spec.cluster_ref.name == name);
    let mut next = RebalanceStatus {
        mode: settings.mode,
        last_round_time: Some(Time(now)),
        rounds: previous.rounds + 1,
        moves_requested: previous.moves_requested,
        ..RebalanceStatus::default()
    };
    let mut snapshot = Figures::from(observation).snapshot;
    let mut cordoned = cluster.members_to_empty();
    cordoned.extend(cluster.spec.cordoned_members.iter().cloned());
    for member in snapshot.members_mut() {
        member.cordoned = cordoned.contains(&member.name);
    }
    let in_flight = containers.iter().filter(|c| moving(c, now)).count();
    if in_flight > 0 {
        // Not a round: the last one's plan is still being carried out.
        next.rounds = previous.rounds;
        next.spread = rebalance::spread(&snapshot);
        next.planned_spread = previous.planned_spread;
        next.moves = previous.moves;
        next.message = format!("waiting for {in_flight} moves to end before the next round");
        status.rebalance = Some(next);
        return Ok(Some(interval));
    }
    snapshot.set_placed(
        containers
            .iter()
            .filter_map(|c| {
                Some(crate::placement::model::Placed {
                    namespace: c.namespace().unwrap_or_default(),
                    name: c.name_any(),
                    labels: c.labels().clone(),
                    member: c.status.as_ref()?.member.clone()?,
                })
            })
            .collect(),
    );
    let (movables, containers_moved, policies) = movables(cluster, &containers, now, ctx).await?;
    let budgets = budgets(&containers, &movables, ctx).await?;
    let plan = rebalance::plan(
        &snapshot,
        &movables,
        &policies,
        &budgets,
        &settings_of(settings),
    );
    next.spread = plan.spread_before;
    next.planned_spread = plan.spread_after;
    next.moves = plan
        .moves
        .iter()
        .filter_map(|m| {
            let container = containers_moved.get(m.container)?;
            Some(PlannedMove {
                namespace: container.namespace().unwrap_or_default(),
                name: container.name_any(),
                from: m.from.clone(),
                to: m.to.clone(),
                reason: m.reason.to_string(),
            })
        })
        .collect();
    let mode = match settings.mode {
        RebalanceMode::On => "On",
        _ => "DryRun",
    };
    ctx.metrics
        .observe_rebalance(&name, mode, plan.spread_before, next.moves.len());
    next.message = if next.moves.is_empty() {
        format!(
            "spread {:.3}: nothing to move ({} containers may move)",
            plan.spread_before,
            movables.len()
        )
    } else if settings.mode == RebalanceMode::DryRun {
        format!(
            "dry run: {} moves would take the spread from {:.3} to {:.3}",
            next.moves.len(),
            plan.spread_before,
            plan.spread_after
        )
    } else {
        format!(
            "{} moves asked to take the spread from {:.3} to {:.3}",
            next.moves.len(),
            plan.spread_before,
            plan.spread_after
        )
    };
    if settings.mode == RebalanceMode::On && !next.moves.is_empty() {
        let requested_at = now.to_string();
        for planned in &next.moves {
            let api: Api<LxdContainer> = Api::namespaced(ctx.client.clone(), &planned.namespace);
            let patch = serde_json::json!({"metadata": {"annotations": {
                MOVE_TO_ANNOTATION: planned.to,
                MOVE_REQUESTED_AT_ANNOTATION: requested_at,
            }}});
            api.patch(
                &planned.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            next.moves_requested += 1;
        }
        tracing::info!(cluster = %name, moves = next.moves.len(), spread = plan.spread_before, planned = plan.spread_after, "rebalancing");
        let event = KubeEvent {
            type_: EventType::Normal,
            reason: "Rebalancing".to_owned(),
            note: Some(next.message.clone()),
            action: "Rebalance".to_owned(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!(%error, "cannot publish an Event");
        }
    }
    status.rebalance = Some(next);
    Ok(Some(interval))
}

fn settings_of(settings: &RebalanceSettings) -> Settings {
    Settings {
        threshold: f64::from(settings.spread_threshold_percent) / 100.0,
        min_improvement: f64::from(settings.min_improvement_percent) / 100.0,
        max_moves: settings.max_moves_per_round as usize,
        cooldown: Duration::from_secs(u64::from(settings.cooldown_seconds)),
    }
}

/// Whether the container moves now, or was asked to and has not yet (the ask still holds).
fn moving(container: &LxdContainer, now: jiff::Timestamp) -> bool {
    let Some(status) = &container.status else {
        return false;
    };
    if status.moving.is_some() {
        return true;
    }
    move_request(container).is_some_and(|(to, at)| {
        status.member.as_deref() != Some(to.as_str())
            && now.duration_since(at).unsigned_abs() < MOVE_REQUEST_HOLDS_FOR
    })
}

/// The containers that may move now (they allow it, are not pinned, run Ready on a member),
/// the same containers in the same order, and the policies that place them.
async fn movables(
    cluster: &LxdCluster,
    containers: &[Arc<LxdContainer>],
    now: jiff::Timestamp,
    ctx: &Context,
) -> Result<(Vec<Movable>, Vec<Arc<LxdContainer>>, Vec<Policy>), kube::Error> {
    let mut movables = Vec::new();
    let mut kept = Vec::new();
    let mut policies: Vec<Policy> = Vec::new();
    let mut policy_index: HashMap<String, Option<usize>> = HashMap::new();
    for container in containers {
        let allowed = container
            .spec
            .placement
            .as_ref()
            .is_some_and(|p| p.rebalance == RebalancePolicy::Allow && p.target.is_none());
        let Some(member) = container.status.as_ref().and_then(|s| s.member.clone()) else {
            continue;
        };
        if !allowed || !is_ready(container) {
            continue;
        }
        // A spec the container's own reconciler refuses is not moved either.
        let Ok(desired) = DesiredInstance::from_container(container) else {
            continue;
        };
        let chosen = ChosenPolicy::of(
            &desired.placement.policy,
            cluster.spec.default_placement_policy.as_deref(),
        );
        let key = chosen.name().to_owned();
        let index = match policy_index.get(&key) {
            Some(index) => *index,
            None => {
                let index = match load(&ctx.client, &chosen).await {
                    Ok(policy) => {
                        policies.push(policy);
                        Some(policies.len() - 1)
                    }
                    Err(error) => {
                        tracing::warn!(policy = %key, %error, "rebalancing leaves the containers of this policy where they are");
                        None
                    }
                };
                policy_index.insert(key, index);
                index
            }
        };
        let Some(policy) = index else {
            continue;
        };
        let since_last_move =
            move_request(container).map(|(_, at)| now.duration_since(at).unsigned_abs());
        movables.push(Movable {
            request: desired.placement.request,
            member,
            policy,
            budget_group: set_of(container),
            since_last_move,
        });
        kept.push(container.clone());
    }
    Ok((movables, kept, policies))
}

/// The uid of the set that controls the container, if one does.
fn set_of(container: &LxdContainer) -> Option<String> {
    container
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == LxdContainerSet::kind(&()))
        .map(|o| o.uid.clone())
}

/// How many more children of each set among the movables may be disrupted now.
async fn budgets(
    containers: &[Arc<LxdContainer>],
    movables: &[Movable],
    ctx: &Context,
) -> Result<HashMap<String, usize>, kube::Error> {
    let mut budgets = HashMap::new();
    for movable in movables {
        let Some(set_uid) = &movable.budget_group else {
            continue;
        };
        if budgets.contains_key(set_uid) {
            continue;
        }
        let children: Vec<Arc<LxdContainer>> = containers
            .iter()
            .filter(|c| set_of(c).as_ref() == Some(set_uid))
            .cloned()
            .collect();
        let Some(first) = children.first() else {
            continue;
        };
        let Some(owner) = first
            .owner_references()
            .iter()
            .find(|o| o.uid == *set_uid)
            .map(|o| o.name.clone())
        else {
            continue;
        };
        let sets: Api<LxdContainerSet> =
            Api::namespaced(ctx.client.clone(), &first.namespace().unwrap_or_default());
        let left = match sets.get_opt(&owner).await? {
            Some(set) if set.metadata.uid.as_deref() == Some(set_uid.as_str()) => {
                let replicas = usize::try_from(set.spec.replicas).unwrap_or(0);
                let max_unavailable =
                    usize::try_from(set.spec.update_strategy.max_unavailable(set.spec.replicas))
                        .unwrap_or(1);
                disruptions_left(&children, replicas, max_unavailable)
            }
            _ => 0,
        };
        budgets.insert(set_uid.clone(), left);
    }
    Ok(budgets)
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::{LxdContainerStatus, MoveStatus};

    use super::*;

    fn on(member: &str, asked_to: Option<(&str, Duration)>, moving_now: bool) -> LxdContainer {
        let mut builder = LxdContainer::builder("web");
        if let Some((to, ago)) = asked_to {
            let at = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap();
            builder = builder.rebalance_requested(to, &at.to_string());
        }
        let mut container = builder.build();
        container.status = Some(LxdContainerStatus {
            member: Some(member.to_owned()),
            moving: moving_now.then(MoveStatus::default),
            ..LxdContainerStatus::default()
        });
        container
    }

    #[test]
    fn a_round_waits_for_moves_under_way_and_for_requests_not_yet_carried_out() {
        let now = jiff::Timestamp::now();
        let minute = Duration::from_secs(60);
        assert!(moving(&on("node1", None, true), now));
        assert!(moving(&on("node1", Some(("node3", minute)), false), now));
        // Carried out, never asked, or asked so long ago that the ask no longer holds.
        assert!(!moving(&on("node3", Some(("node3", minute)), false), now));
        assert!(!moving(&on("node1", None, false), now));
        let stale = MOVE_REQUEST_HOLDS_FOR + minute;
        assert!(!moving(&on("node1", Some(("node3", stale)), false), now));
    }

    #[test]
    fn percentages_become_fractions_for_the_planner() {
        let settings = settings_of(&RebalanceSettings::default());
        assert_eq!(
            (
                settings.threshold,
                settings.min_improvement,
                settings.max_moves
            ),
            (0.10, 0.02, 5)
        );
        assert_eq!(settings.cooldown, Duration::from_secs(600));
    }
}
