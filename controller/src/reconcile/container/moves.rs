//! Draining: a container whose member is in the cluster's `drainedMembers` is moved to a member
//! its placement policy chooses (the drained one left out as cordoned); rebalancing: a container
//! the cluster's rebalancer asks to move (the annotation [`MOVE_TO_ANNOTATION`]) is moved to the
//! member the rebalancer's plan names. Both by LXD's own means:
//! stop, move within the cluster (a cold migration that copies the root filesystem), and the
//! converge step that follows starts it again if it should run. At most `maxConcurrentMoves`
//! moves run at once per cluster.
//!
//! The move is written into status (`status.move`) before the instance is stopped, so a
//! restarted operator finishes it: it finds the instance where LXD has it (on the old member,
//! running or stopped, on the new one, or still under LXD's move operation) and goes on from
//! there; nothing is created twice and nothing is left stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use lxd_operator_crds::container::{ContainerPhase, MoveStatus, PlacementStatus};

use lxd_operator_crds::rebalance::{
    MOVE_REQUESTED_AT_ANNOTATION, MOVE_TO_ANNOTATION, RebalanceMode, RebalancePolicy,
};
use lxd_operator_crds::shared::{CONDITION_DRAINING, CONDITION_REBALANCING};
use lxd_operator_crds::{LxdCluster, LxdContainer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::context::Context;
use super::budget::{Disruption, OverBudget};
use super::desired::DesiredInstance;
use super::failure::Failure;
use super::placement::{PlacementError, place};
use super::report::{StatusWriter, publish};
use super::{OPERATION_TIMEOUT, STOP_TIMEOUT};
use crate::lxd::types::{Instance, Operation, StateAction};
use crate::lxd::{LxdClient, LxdError};

/// A cold migration copies the whole root filesystem: allow it much longer than other calls.
const MOVE_TIMEOUT: Duration = Duration::from_secs(900);
/// How soon a container waiting for a move slot, or for LXD's move operation, looks again.
const SLOT_RECHECK: Duration = Duration::from_secs(2);
/// How soon a container no member can take, or whose move failed, tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(15);

/// The moves running now, per cluster, the containers waiting for a slot, and when each
/// container's last move failed.
#[derive(Debug, Default)]
pub struct MoveSlots {
    by_cluster: Mutex<HashMap<String, Arc<ClusterMoves>>>,
    failed: Mutex<HashMap<String, Instant>>,
}

/// One cluster's move slots, and who waits for one (woken in turn as slots free up, so that
/// a drain goes on at once rather than at the waiters' next look).
#[derive(Debug)]
struct ClusterMoves {
    limit: usize,
    slots: Arc<Semaphore>,
    waiting: Mutex<VecDeque<ObjectRef<LxdContainer>>>,
    wake: Option<UnboundedSender<ObjectRef<LxdContainer>>>,
}

/// A move's slot; when it is dropped, the next container waiting for one is woken.
#[derive(Debug)]
pub struct MovePermit {
    permit: Option<OwnedSemaphorePermit>,
    moves: Option<Arc<ClusterMoves>>,
}

impl Drop for MovePermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        if let Some(moves) = &self.moves
            && let Some(wake) = &moves.wake
            && let Some(next) = moves.waiting.lock().ok().and_then(|mut w| w.pop_front())
        {
            let _ = wake.unbounded_send(next);
        }
    }
}

impl MoveSlots {
    fn cluster(
        &self,
        cluster: &str,
        limit: usize,
        wake: Option<&UnboundedSender<ObjectRef<LxdContainer>>>,
    ) -> Option<Arc<ClusterMoves>> {
        let mut by_cluster = self.by_cluster.lock().ok()?;
        let fresh = || {
            Arc::new(ClusterMoves {
                limit,
                slots: Arc::new(Semaphore::new(limit)),
                waiting: Mutex::new(VecDeque::new()),
                wake: wake.cloned(),
            })
        };
        let entry = by_cluster.entry(cluster.to_owned()).or_insert_with(fresh);
        // A changed limit applies to the moves that start after the change.
        if entry.limit != limit {
            *entry = fresh();
        }
        Some(entry.clone())
    }

    /// A slot on `cluster`, of `limit` at once, if one is free; else `waiter` is queued to be
    /// woken when one frees up.
    fn try_take(
        &self,
        cluster: &str,
        limit: usize,
        waiter: Option<(
            ObjectRef<LxdContainer>,
            &UnboundedSender<ObjectRef<LxdContainer>>,
        )>,
    ) -> Option<MovePermit> {
        let wake = waiter.as_ref().map(|(_, wake)| *wake);
        let moves = self.cluster(cluster, limit, wake)?;
        match moves.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(MovePermit {
                permit: Some(permit),
                moves: Some(moves),
            }),
            Err(_) => {
                if let Some((reference, _)) = waiter
                    && let Ok(mut waiting) = moves.waiting.lock()
                    && !waiting.contains(&reference)
                {
                    waiting.push_back(reference);
                }
                None
            }
        }
    }

    /// A slot for a move a restarted operator found half done: it goes on at once, whatever
    /// the limit (it counts against the limit while free slots exist).
    fn resume(&self, cluster: &str, limit: usize) -> MovePermit {
        self.try_take(cluster, limit, None).unwrap_or(MovePermit {
            permit: None,
            moves: None,
        })
    }

    fn failed_recently(&self, uid: &str) -> bool {
        self.failed
            .lock()
            .ok()
            .and_then(|failed| failed.get(uid).copied())
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
    }

    fn record_failure(&self, uid: &str, failed: bool) {
        if let Ok(mut map) = self.failed.lock() {
            if failed {
                map.insert(uid.to_owned(), Instant::now());
            } else {
                map.remove(uid);
            }
        }
    }
}

/// What the drain step leaves for the rest of the reconcile.
#[derive(Debug, Default)]
pub(super) struct DrainOutcome {
    /// Held until the container runs again on its new member.
    pub(super) permit: Option<MovePermit>,
    /// Look again this soon (a slot, a failed move, no member fits).
    pub(super) recheck: Option<Duration>,
    /// The set's disruption budget unit the move took, held as long as the slot.
    pub(super) disruption: Option<Disruption>,
}

/// Whether our containers must leave `member` of `cluster` (drained, or leaving the cluster).
pub(super) fn is_drained(cluster: &LxdCluster, member: &str) -> bool {
    cluster.members_to_empty().iter().any(|d| d == member)
}

/// Moves the container off a drained member, or finishes a move begun before. Converging
/// goes on afterwards (it starts the moved instance), also when the container stays.
pub(super) async fn drain(
    desired: &DesiredInstance,
    cluster: &LxdCluster,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<DrainOutcome, Failure> {
    let cluster_name = &desired.placement.cluster;
    let limit = usize::try_from(cluster.spec.max_concurrent_moves.max(1)).unwrap_or(1);
    let resumed = status.status.moving.is_some();
    let mut disruption = None;
    let permit = match status.status.moving.clone() {
        Some(_) => ctx.moves.resume(cluster_name, limit),
        None => {
            let Some(member) = status.status.member.clone() else {
                return Ok(DrainOutcome::default());
            };
            let cause = if is_drained(cluster, &member) {
                Cause::Drain
            } else if let Some(to) = requested_move(status.container, cluster, &member) {
                Cause::Rebalance { to }
            } else {
                status
                    .status
                    .conditions
                    .retain(|c| c.type_ != CONDITION_DRAINING && c.type_ != CONDITION_REBALANCING);
                return Ok(DrainOutcome::default());
            };
            if ctx.moves.failed_recently(desired.uid()) {
                return Ok(recheck(RETRY_AFTER_FAILURE));
            }
            match ctx.budgets.disrupt(status.container, ctx).await? {
                Ok(granted) => disruption = granted,
                Err(OverBudget(why)) => {
                    status.condition(
                        cause.condition(),
                        true,
                        "DisruptionBudget",
                        format!("{}; waiting: {why}", cause.describe(&member)),
                    );
                    return Ok(recheck(SLOT_RECHECK));
                }
            }
            // Moves recorded in status count too: a restarted operator's slots start empty
            // while the moves its predecessor began are still under way.
            let recorded = ctx
                .containers
                .state()
                .iter()
                .filter(|c| {
                    c.spec.cluster_ref.name == *cluster_name
                        && c.metadata.uid.as_deref() != Some(desired.uid())
                        && c.status.as_ref().is_some_and(|s| s.moving.is_some())
                })
                .count();
            // Until the first list is in, the store cannot tell: start nothing new yet.
            let listed = tokio::time::timeout(Duration::ZERO, ctx.containers.wait_until_ready())
                .await
                .is_ok_and(|ready| ready.is_ok());
            let waiter = (ObjectRef::from_obj(status.container), ctx.wake_sender());
            let permit = if listed && recorded < limit {
                ctx.moves
                    .try_take(cluster_name, limit, Some((waiter.0, waiter.1)))
            } else {
                None
            };
            let Some(permit) = permit else {
                status.condition(
                    cause.condition(),
                    true,
                    "WaitingForSlot",
                    format!(
                        "{}; waiting for a move slot ({limit} moves at once on this cluster)",
                        cause.describe(&member)
                    ),
                );
                return Ok(recheck(SLOT_RECHECK));
            };
            let chosen = match &cause {
                Cause::Drain => choose_destination(desired, &member, client, ctx, status).await?,
                Cause::Rebalance { to } => {
                    begin_rebalance_move(&member, to, ctx, status).await?;
                    Some(())
                }
            };
            match chosen {
                Some(()) => permit,
                None => return Ok(recheck(RETRY_AFTER_FAILURE)),
            }
        }
    };
    let Some(planned) = status.status.moving.clone() else {
        return Ok(DrainOutcome::default());
    };
    match carry_out(desired, &planned, resumed, client, status).await {
        Ok(Progress::Done { seconds }) => {
            ctx.moves.record_failure(desired.uid(), false);
            ctx.metrics
                .observe_move(cluster_name, true, Duration::from_secs_f64(seconds));
            status.status.moving = None;
            status.status.member = Some(planned.to.clone());
            status
                .status
                .conditions
                .retain(|c| c.type_ != CONDITION_DRAINING && c.type_ != CONDITION_REBALANCING);
            status.write().await?;
            publish(
                ctx,
                status.container,
                EventType::Normal,
                "Moved",
                format!(
                    "instance {} moved from {} to {} in {seconds:.1} s",
                    desired.name, planned.from, planned.to
                ),
            )
            .await;
            Ok(DrainOutcome {
                permit: Some(permit),
                recheck: None,
                disruption,
            })
        }
        // Converging must not touch the instance while LXD moves it.
        Ok(Progress::Busy) => Err(Failure::Waiting {
            phase: ContainerPhase::Moving,
            reason: "Moving",
            message: format!(
                "LXD is moving instance {} from {} to {}",
                desired.name, planned.from, planned.to
            ),
            retry: SLOT_RECHECK,
        }),
        Ok(Progress::Elsewhere(member)) => {
            status.status.moving = None;
            status.status.member = member;
            status.write().await?;
            Ok(DrainOutcome::default())
        }
        Err(error) => {
            ctx.moves.record_failure(desired.uid(), true);
            ctx.metrics
                .observe_move(cluster_name, false, Duration::ZERO);
            let (condition, what) = if is_drained(cluster, &planned.from) {
                (CONDITION_DRAINING, "the drain")
            } else {
                (CONDITION_REBALANCING, "the rebalancer")
            };
            let message = format!(
                "moving instance {} from {} to {} failed: {error}; it stays on {} and {what} tries again",
                desired.name, planned.from, planned.to, planned.from
            );
            status.status.moving = None;
            status.status.member = Some(planned.from.clone());
            status.condition(condition, false, "MoveFailed", message.clone());
            status.write().await?;
            tracing::warn!(instance = %desired.name, %message, "move failed");
            publish(
                ctx,
                status.container,
                EventType::Warning,
                "MoveFailed",
                message,
            )
            .await;
            // Converging starts it again where it is.
            Ok(recheck(RETRY_AFTER_FAILURE))
        }
    }
}

/// Why a container leaves its member.
enum Cause {
    /// Its member is drained (or leaves the cluster).
    Drain,
    /// The rebalancer asks it to move to `to`.
    Rebalance { to: String },
}

impl Cause {
    fn condition(&self) -> &'static str {
        match self {
            Cause::Drain => CONDITION_DRAINING,
            Cause::Rebalance { .. } => CONDITION_REBALANCING,
        }
    }

    fn describe(&self, member: &str) -> String {
        match self {
            Cause::Drain => format!("member {member} is drained"),
            Cause::Rebalance { to } => format!("the rebalancer moves it from {member} to {to}"),
        }
    }
}

/// How long a move request of the rebalancer holds: one its container could not carry out by
/// then (its member refused, the destination filled up) is dropped, and the rebalancer plans
/// anew.
pub const MOVE_REQUEST_HOLDS_FOR: Duration = Duration::from_secs(600);

/// The member the rebalancer asks `container` (on `member`) to move to, if it asks, the
/// cluster's rebalancing is `On`, the container allows it, and the destination still takes
/// containers (online, neither cordoned nor drained).
pub(crate) fn requested_move(
    container: &LxdContainer,
    cluster: &LxdCluster,
    member: &str,
) -> Option<String> {
    let on = cluster
        .spec
        .rebalance
        .as_ref()
        .is_some_and(|r| r.mode == RebalanceMode::On);
    let placement = container.spec.placement.as_ref()?;
    if !on || placement.rebalance != RebalancePolicy::Allow || placement.target.is_some() {
        return None;
    }
    let (to, requested_at) = move_request(container)?;
    let fresh = jiff::Timestamp::now()
        .duration_since(requested_at)
        .unsigned_abs()
        < MOVE_REQUEST_HOLDS_FOR;
    let takes = !cluster.members_to_empty().contains(&to)
        && !cluster.spec.cordoned_members.contains(&to)
        && cluster
            .status
            .iter()
            .flat_map(|s| s.members.iter())
            .any(|m| m.name == to && m.status == "Online");
    (fresh && takes && to != member).then_some(to)
}

/// The rebalancer's last request of `container`: the member and when it asked.
pub(crate) fn move_request(container: &LxdContainer) -> Option<(String, jiff::Timestamp)> {
    let annotations = container.metadata.annotations.as_ref()?;
    let to = annotations.get(MOVE_TO_ANNOTATION)?;
    let at = annotations
        .get(MOVE_REQUESTED_AT_ANNOTATION)?
        .parse()
        .ok()?;
    Some((to.clone(), at))
}

/// Records the move the rebalancer asks for, before the instance is stopped (see the module's
/// comment).
async fn begin_rebalance_move(
    member: &str,
    to: &str,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<(), Failure> {
    status.status.moving = Some(MoveStatus {
        from: member.to_owned(),
        to: to.to_owned(),
        reason: format!("rebalancing: the cluster's rebalancer moves it to {to}"),
        started_at: Some(Time(jiff::Timestamp::now())),
    });
    let message = format!("the rebalancer moves it from {member} to {to}");
    // Where it runs was last decided by the rebalancer's plan, within the same policy's filters.
    let policy = status
        .status
        .placement
        .as_ref()
        .and_then(|p| p.policy.clone());
    status.status.placement = Some(PlacementStatus {
        policy,
        explanation: message.clone(),
        decided_at: Some(Time(jiff::Timestamp::now())),
    });
    status.status.phase = Some(ContainerPhase::Moving);
    status.condition(CONDITION_REBALANCING, true, "Moving", message.clone());
    status.write().await?;
    publish(ctx, status.container, EventType::Normal, "Moving", message).await;
    Ok(())
}

fn recheck(after: Duration) -> DrainOutcome {
    DrainOutcome {
        permit: None,
        recheck: Some(after),
        disruption: None,
    }
}

/// Asks placement where the container goes (the drained member left out) and records the
/// move; `None` when no member can take it now (the Draining condition says why).
async fn choose_destination(
    desired: &DesiredInstance,
    member: &str,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<Option<()>, Failure> {
    let attempt = place(
        &desired.placement,
        client,
        &ctx.client,
        &ctx.containers,
        &ctx.placements,
    )
    .await;
    let decision = match attempt.outcome {
        Ok(decision) => decision,
        Err(PlacementError::Lxd(error)) => return Err(Failure::Lxd(error)),
        Err(PlacementError::Kube(error)) => return Err(Failure::Kube(error)),
        Err(error) => {
            status.condition(
                CONDITION_DRAINING,
                false,
                "NoMemberFits",
                format!("member {member} is drained, but the container stays: {error}"),
            );
            return Ok(None);
        }
    };
    let explanation = decision.explanation.to_string();
    status.status.moving = Some(MoveStatus {
        from: member.to_owned(),
        to: decision.member.clone(),
        reason: format!("member {member} is drained"),
        started_at: Some(Time(jiff::Timestamp::now())),
    });
    status.status.placement = Some(PlacementStatus {
        policy: Some(attempt.policy),
        explanation: explanation.clone(),
        decided_at: Some(Time(jiff::Timestamp::now())),
    });
    status.status.phase = Some(ContainerPhase::Moving);
    let message = format!(
        "member {member} is drained: moving to {}: {explanation}",
        decision.member
    );
    status.condition(CONDITION_DRAINING, true, "Moving", message.clone());
    // Written before the instance is stopped: see the module's comment.
    status.write().await?;
    publish(ctx, status.container, EventType::Normal, "Moving", message).await;
    Ok(Some(()))
}

/// How far a move got.
enum Progress {
    /// The instance is on its new member (stopped; converging starts it).
    Done { seconds: f64 },
    /// LXD is still busy with the instance (a move begun before a restart).
    Busy,
    /// The instance is neither where it was nor where it goes (or gone): converging decides.
    Elsewhere(Option<String>),
}

/// Stops the instance and moves it, from wherever LXD has it now. `resumed`: the move was
/// begun by an earlier reconcile (perhaps by a process that was killed), so LXD may hold a copy
/// of it from a move that died half-way.
async fn carry_out(
    desired: &DesiredInstance,
    planned: &MoveStatus,
    resumed: bool,
    client: &LxdClient,
    status: &mut StatusWriter<'_>,
) -> Result<Progress, LxdError> {
    let started = planned
        .started_at
        .as_ref()
        .map(|t| jiff::Timestamp::now().duration_since(t.0).as_secs_f64())
        .unwrap_or_default();
    let begun = Instant::now();
    let name = &desired.name;
    let found = match client.instance(name).await {
        Ok(found) => Some(found.value).filter(|i| i.owner_uid() == Some(desired.uid())),
        Err(LxdError::NotFound { .. }) => None,
        Err(error) => return Err(error),
    };
    // LXD's move is one operation that copies the instance to the new member under a name of
    // its own, deletes the original and renames the copy: while it runs the name may be
    // missing, so nothing is concluded from the name until it has ended.
    let operations = client.operations().await?;
    if operations
        .iter()
        .any(|operation| operation.runs_on_instance(name))
    {
        return Ok(Progress::Busy);
    }
    let copies = if resumed || found.is_none() {
        stranded_copies(desired, client, &operations).await?
    } else {
        Vec::new()
    };
    let instance = match found {
        Some(instance) => {
            // The original is still there: a copy left by a move that died is only in the way.
            for copy in copies {
                delete_copy(client, &copy).await?;
            }
            instance
        }
        None => match copies.into_iter().next() {
            // The move died after it deleted the original: the copy is the instance now.
            Some(copy) => finish_rename(client, &copy, name).await?,
            None => return Ok(Progress::Elsewhere(None)),
        },
    };
    if instance.location == planned.to {
        return Ok(Progress::Done { seconds: started });
    }
    if instance.location != planned.from {
        return Ok(Progress::Elsewhere(Some(instance.location)));
    }
    let source = client.on_member(&planned.from);
    if instance.status != "Stopped" {
        status.status.phase = Some(ContainerPhase::Moving);
        let handle = source
            .change_state(name, StateAction::Stop, Some(STOP_TIMEOUT), false)
            .await?;
        if source
            .wait(&handle, STOP_TIMEOUT + Duration::from_secs(10))
            .await
            .is_err()
        {
            let handle = source
                .change_state(name, StateAction::Stop, None, true)
                .await?;
            source.wait(&handle, OPERATION_TIMEOUT).await?;
        }
    }
    let handle = source.move_instance(name, &planned.to).await?;
    source.wait(&handle, MOVE_TIMEOUT).await?;
    tracing::info!(instance = %name, from = %planned.from, to = %planned.to, seconds = begun.elapsed().as_secs_f64(), "moved");
    Ok(Progress::Done {
        seconds: started.max(begun.elapsed().as_secs_f64()),
    })
}

/// LXD's move copies of this container that none of `operations` is working on.
async fn stranded_copies(
    desired: &DesiredInstance,
    client: &LxdClient,
    operations: &[Operation],
) -> Result<Vec<Instance>, LxdError> {
    let mut copies = client.instances_by_uid(desired.uid()).await?;
    copies.retain(|copy| {
        copy.is_move_copy() && !operations.iter().any(|op| op.runs_on_instance(&copy.name))
    });
    Ok(copies)
}

async fn delete_copy(client: &LxdClient, copy: &Instance) -> Result<(), LxdError> {
    let on_member = client.on_member(&copy.location);
    let handle = on_member.delete_instance(&copy.name).await?;
    on_member.wait(&handle, OPERATION_TIMEOUT).await?;
    tracing::info!(copy = %copy.name, member = %copy.location, "deleted a copy left by a move that died");
    Ok(())
}

/// Renames a stranded copy to the instance's name, as LXD's move would have done last.
async fn finish_rename(
    client: &LxdClient,
    copy: &Instance,
    name: &str,
) -> Result<Instance, LxdError> {
    let on_member = client.on_member(&copy.location);
    let handle = on_member.rename_instance(&copy.name, name).await?;
    on_member.wait(&handle, OPERATION_TIMEOUT).await?;
    tracing::info!(copy = %copy.name, instance = name, member = %copy.location, "finished a move that died after deleting the original");
    Ok(client.instance(name).await?.value)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn waiter(name: &str) -> ObjectRef<LxdContainer> {
        ObjectRef::new(name).within("default")
    }

    #[tokio::test]
    async fn moves_beyond_the_limit_wait_and_a_freed_slot_wakes_the_first_waiter() {
        let slots = MoveSlots::default();
        let (wake, mut woken) = futures::channel::mpsc::unbounded();
        let first = slots.try_take("local", 2, Some((waiter("a"), &wake)));
        let second = slots.try_take("local", 2, Some((waiter("b"), &wake)));
        assert!(first.is_some() && second.is_some());
        assert!(
            slots
                .try_take("local", 2, Some((waiter("c"), &wake)))
                .is_none()
        );
        assert!(
            slots
                .try_take("local", 2, Some((waiter("d"), &wake)))
                .is_none()
        );
        // Another cluster has slots of its own.
        assert!(
            slots
                .try_take("other", 2, Some((waiter("e"), &wake)))
                .is_some()
        );

        drop(first);
        assert_eq!(
            woken.next().await,
            Some(waiter("c")),
            "the first waiter, first"
        );
        let third = slots.try_take("local", 2, Some((waiter("c"), &wake)));
        assert!(third.is_some());
        // A resumed move goes on even with every slot taken.
        let resumed = slots.resume("local", 2);
        assert!(resumed.permit.is_none());
    }

    fn rebalancing_cluster(mode: &str) -> LxdCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdCluster",
            "metadata": {"name": "local"},
            "spec": {"rebalance": {"mode": mode}, "cordonedMembers": ["node4"]},
            "status": {"members": [
                {"name": "node1", "status": "Online"}, {"name": "node2", "status": "Online"},
                {"name": "node3", "status": "Online"}, {"name": "node4", "status": "Online"},
                {"name": "node5", "status": "Offline"}]}
        }))
        .unwrap()
    }

    fn asked(to: &str, ago: Duration, policy: RebalancePolicy, pinned: bool) -> LxdContainer {
        let mut builder = LxdContainer::builder("web").rebalance(policy);
        if pinned {
            builder = builder.target("node1");
        }
        let at = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap();
        builder.rebalance_requested(to, &at.to_string()).build()
    }

    #[test]
    fn a_move_request_is_honored_only_when_on_allowed_fresh_and_to_a_member_that_takes_containers()
    {
        let on = rebalancing_cluster("On");
        let minute = Duration::from_secs(60);
        let allow = RebalancePolicy::Allow;
        assert_eq!(
            requested_move(&asked("node3", minute, allow, false), &on, "node1").as_deref(),
            Some("node3")
        );
        // Already there: nothing to do.
        assert_eq!(
            requested_move(&asked("node3", minute, allow, false), &on, "node3"),
            None
        );
        let refused = [
            (
                asked("node3", minute, allow, false),
                rebalancing_cluster("DryRun"),
                "DryRun",
            ),
            (
                asked("node3", minute, RebalancePolicy::Never, false),
                on.clone(),
                "not allowed",
            ),
            (asked("node3", minute, allow, true), on.clone(), "pinned"),
            (
                asked("node3", MOVE_REQUEST_HOLDS_FOR + minute, allow, false),
                on.clone(),
                "stale",
            ),
            (asked("node4", minute, allow, false), on.clone(), "cordoned"),
            (asked("node5", minute, allow, false), on.clone(), "offline"),
        ];
        for (container, cluster, why) in refused {
            assert_eq!(requested_move(&container, &cluster, "node1"), None, "{why}");
        }
    }

    #[test]
    fn a_failed_move_waits_before_it_is_tried_again() {
        let slots = MoveSlots::default();
        slots.record_failure("uid-1", true);
        assert!(slots.failed_recently("uid-1"));
        assert!(!slots.failed_recently("uid-2"));
        slots.record_failure("uid-1", false);
        assert!(!slots.failed_recently("uid-1"));
    }
}
