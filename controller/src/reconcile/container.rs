//! The LxdContainer reconciler, as a pipeline: resolve the cluster, validate the spec into a
//! [`desired::DesiredInstance`], decide the next step ([`decide::next_step`], pure), apply it
//! to LXD, write status. Steps repeat within one reconcile until the instance is as desired.

pub mod decide;
pub mod desired;
pub mod naming;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use lxd_operator_crds::container::{ContainerPhase, DesiredState, PlacementStatus};
use lxd_operator_crds::shared::{CONDITION_READY, CONDITION_SCHEDULED};
use lxd_operator_crds::{LxdCluster, LxdContainer, LxdContainerStatus};

use self::decide::{Step, next_step};
use self::desired::DesiredInstance;
use super::status::{condition, set_condition, write_status};
use super::{Context, Error};
use crate::lxd::types::{Instance, StateAction, Target};
use crate::lxd::{CreateOutcome, Intent, LxdClient, LxdError, Settlement};

/// The finalizer that keeps an LxdContainer until its instance is deleted.
pub const FINALIZER: &str = "lxd-operator.dev/instance";
/// How long one LXD operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a graceful stop may take before it is forced.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Steps taken in one reconcile before handing back to the queue.
const MAX_STEPS: usize = 8;

/// Reconciles one LxdContainer (the finalizer wraps apply and cleanup).
#[tracing::instrument(skip_all, fields(object = %format!("{}/{}", container.namespace().unwrap_or_default(), container.name_any())))]
pub async fn reconcile(container: Arc<LxdContainer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = container
        .namespace()
        .unwrap_or_else(|| "default".to_owned());
    let api: Api<LxdContainer> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, container, |event| async {
        match event {
            FinalizerEvent::Apply(container) => apply(&container, &api, &ctx).await,
            FinalizerEvent::Cleanup(container) => cleanup(&container, &api, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// What to do when a reconcile fails: LXD and API hiccups are retried soon.
pub fn error_policy(container: Arc<LxdContainer>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(container = %format!("{}/{}", container.namespace().unwrap_or_default(), container.name_any()), %error, "LxdContainer reconcile failed");
    Action::requeue(Duration::from_secs(if error.is_transient() {
        2
    } else {
        15
    }))
}

/// A status under construction, with the previous one for condition times.
struct StatusWriter<'a> {
    container: &'a LxdContainer,
    api: &'a Api<LxdContainer>,
    previous: LxdContainerStatus,
    status: LxdContainerStatus,
}

impl<'a> StatusWriter<'a> {
    fn new(container: &'a LxdContainer, api: &'a Api<LxdContainer>) -> Self {
        let previous = container.status.clone().unwrap_or_default();
        let mut status = previous.clone();
        status.observed_generation = container.metadata.generation;
        StatusWriter {
            container,
            api,
            previous,
            status,
        }
    }

    fn condition(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        let generation = self.container.metadata.generation;
        set_condition(
            &mut self.status.conditions,
            condition(
                &self.previous.conditions,
                type_,
                ok,
                reason,
                message,
                generation,
            ),
        );
    }

    fn not_ready(&mut self, phase: ContainerPhase, reason: &str, message: impl Into<String>) {
        self.status.phase = Some(phase);
        self.condition(CONDITION_READY, false, reason, message);
    }

    async fn write(&self) -> Result<(), Error> {
        write_status(
            self.api,
            self.container,
            self.container.status.as_ref(),
            &self.status,
        )
        .await?;
        Ok(())
    }
}

async fn apply(
    container: &LxdContainer,
    api: &Api<LxdContainer>,
    ctx: &Context,
) -> Result<Action, Error> {
    let mut status = StatusWriter::new(container, api);
    if status.status.phase.is_none() {
        status.status.phase = Some(ContainerPhase::Pending);
    }

    // Validate: a spec the operator cannot carry out waits for a change.
    let desired = match DesiredInstance::from_container(container) {
        Ok(desired) => desired,
        Err(error) => {
            status.not_ready(ContainerPhase::Failed, "InvalidSpec", error.to_string());
            status.write().await?;
            publish(
                ctx,
                container,
                EventType::Warning,
                "InvalidSpec",
                error.to_string(),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    status.status.instance_name = Some(desired.name.clone());

    // Resolve the cluster. Indexed first, so that the cluster's connection wakes it.
    let cluster_name = &container.spec.cluster_ref.name;
    ctx.index_instance(cluster_name, &desired.name, container);
    let Some(client) = ctx.connections.get(cluster_name).map(|c| c.client.clone()) else {
        status.not_ready(
            ContainerPhase::Pending,
            "ClusterNotReady",
            format!("LxdCluster {cluster_name} is not connected (yet); see its Ready condition"),
        );
        status.write().await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };

    let result = converge(container, &desired, &client, ctx, &mut status).await;
    match result {
        Ok(instance) => {
            observe_running(&client, &instance, &mut status).await;
            status.write().await?;
            Ok(Action::requeue(ctx.resync))
        }
        Err(Failure::Permanent { reason, message }) => {
            status.not_ready(ContainerPhase::Failed, reason, message.clone());
            status.write().await?;
            publish(ctx, container, EventType::Warning, reason, message).await;
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Err(Failure::Waiting {
            phase,
            reason,
            message,
            retry,
        }) => {
            status.not_ready(phase, reason, message);
            status.write().await?;
            Ok(Action::requeue(retry))
        }
        Err(Failure::Transient(error)) => {
            status.condition(CONDITION_READY, false, "LxdError", error.to_string());
            status.write().await?;
            Err(Error::Lxd(error))
        }
    }
}

/// Why converging stopped short.
enum Failure {
    /// Retrying without a change of spec will not help (bad image, invalid config, name taken).
    Permanent {
        reason: &'static str,
        message: String,
    },
    /// Not possible now; try again later.
    Waiting {
        phase: ContainerPhase,
        reason: &'static str,
        message: String,
        retry: Duration,
    },
    /// LXD hiccup: back off and retry.
    Transient(LxdError),
}

impl From<LxdError> for Failure {
    fn from(error: LxdError) -> Self {
        match error {
            LxdError::Invalid { message } | LxdError::OperationFailed { message } => {
                Failure::Permanent {
                    reason: "LxdRefused",
                    message,
                }
            }
            LxdError::NotFound { message } => Failure::Permanent {
                reason: "NotFound",
                message,
            },
            other => Failure::Transient(other),
        }
    }
}

/// Takes steps until the instance is as desired, and returns it.
async fn converge(
    container: &LxdContainer,
    desired: &DesiredInstance,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<Instance, Failure> {
    let uid = container.metadata.uid.clone().unwrap_or_default();
    // What the last step left the instance as, when the step itself tells (a create, a state
    // change): the next step needs no read of LXD, which is busy enough during a rollout.
    let mut known: Option<Instance> = None;
    // No instance to look for: the container was never placed (its member is recorded before
    // anything is created, so an instance of ours has one), or placement just looked. A name
    // taken meanwhile makes the create fail with a conflict, which adopts our own.
    let mut known_absent =
        status.previous.member.is_none() && status.previous.instance_name.is_none();
    for _ in 0..MAX_STEPS {
        // The whole project is searched for the uid only when the instance may have another name
        // than the one the spec gives now; otherwise the name finds it.
        let renamed = status
            .previous
            .instance_name
            .as_ref()
            .is_some_and(|previous| *previous != desired.name);
        let observed = match known.take() {
            Some(instance) => Some(instance),
            None if std::mem::take(&mut known_absent) => None,
            None => find_instance(client, &uid, &desired.name, renamed).await?,
        };
        let member = observed
            .as_ref()
            .map(|i| i.location.clone())
            .or_else(|| status.status.member.clone());
        match next_step(desired, observed.as_ref(), member.as_deref()) {
            Step::InSync => {
                return observed.ok_or_else(|| {
                    Failure::Transient(LxdError::NotFound {
                        message: "instance vanished".to_owned(),
                    })
                });
            }
            Step::Place => {
                let started = std::time::Instant::now();
                let placed =
                    super::placement::place(container, client, &ctx.client, &ctx.placements).await;
                let strategy = placed
                    .as_ref()
                    .map(|(_, policy)| policy.clone())
                    .unwrap_or_else(|_| placement_policy_name(container));
                let labels = crate::telemetry::metrics::PlacementLabels {
                    strategy,
                    outcome: if placed.is_ok() {
                        "placed"
                    } else {
                        "unschedulable"
                    }
                    .to_owned(),
                };
                ctx.metrics.placements.get_or_create(&labels).inc();
                let kind = crate::telemetry::metrics::KindLabels {
                    kind: "LxdContainer".to_owned(),
                };
                ctx.metrics
                    .placement_duration
                    .get_or_create(&kind)
                    .observe(started.elapsed().as_secs_f64());
                let (decision, policy_name) =
                    placed.map_err(|error| placement_failure(error, status))?;
                let member = decision.member.clone();
                let explanation = decision.explanation.to_string();
                status.status.member = Some(member.clone());
                status.status.phase = Some(ContainerPhase::Scheduled);
                status.status.placement = Some(PlacementStatus {
                    policy: Some(policy_name),
                    explanation: explanation.clone(),
                    decided_at: Some(Time(jiff::Timestamp::now())),
                });
                status.condition(
                    CONDITION_SCHEDULED,
                    true,
                    "Placed",
                    format!("placed on {member}: {explanation}"),
                );
                // Recorded before creating, so a crash between the two recreates on this member.
                status.write().await.map_err(|e| {
                    Failure::Transient(LxdError::Unavailable {
                        message: e.to_string(),
                    })
                })?;
                publish(
                    ctx,
                    container,
                    EventType::Normal,
                    "Scheduled",
                    format!("placed on {member}: {explanation}"),
                )
                .await;
                known_absent = true;
            }
            Step::Create { member } => {
                status.status.phase = Some(ContainerPhase::Creating);
                let created = client
                    .create_or_adopt_by_name(
                        &desired.create_request(),
                        &Target::Member(member.clone()),
                        &uid,
                        OPERATION_TIMEOUT,
                    )
                    .await
                    .map_err(|error| match error {
                        LxdError::AlreadyExists { message } => Failure::Permanent {
                            reason: "NameConflict",
                            message,
                        },
                        LxdError::NotFound { message } if message.contains("member") => {
                            // The chosen member is gone: choose again.
                            status.status.member = None;
                            Failure::Waiting {
                                phase: ContainerPhase::Pending,
                                reason: "MemberGone",
                                message,
                                retry: Duration::from_secs(1),
                            }
                        }
                        other => Failure::from(other),
                    });
                if created.is_err() {
                    ctx.placements
                        .release(&container.spec.cluster_ref.name, &uid)
                        .await;
                }
                let outcome = created?;
                let (reason, verb) = match &outcome {
                    CreateOutcome::Created(_) => ("Created", "created"),
                    CreateOutcome::Adopted(_) => ("Adopted", "adopted"),
                };
                known = Some(outcome.instance().clone());
                publish(
                    ctx,
                    container,
                    EventType::Normal,
                    reason,
                    format!("instance {} {verb} on {member}", desired.name),
                )
                .await;
            }
            Step::Update(put) => {
                let current = client.instance(&desired.name).await?;
                let handle = client
                    .update_instance(&desired.name, &put, current.etag.as_deref())
                    .await;
                match handle {
                    Ok(handle) => match client.wait(&handle, OPERATION_TIMEOUT).await {
                        Ok(_) => {
                            publish(
                                ctx,
                                container,
                                EventType::Normal,
                                "Updated",
                                "instance configuration updated",
                            )
                            .await
                        }
                        Err(
                            LxdError::Invalid { message } | LxdError::OperationFailed { message },
                        ) => {
                            // Some changes LXD applies only to a stopped instance: report, never force.
                            return Err(Failure::Waiting {
                                phase: phase_of(&current.value.status),
                                reason: "UpdateRefused",
                                message: format!("LXD refused the change: {message}"),
                                retry: Duration::from_secs(30),
                            });
                        }
                        Err(error) => return Err(Failure::Transient(error)),
                    },
                    Err(LxdError::Conflict { .. }) => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            Step::ChangeState(action) => {
                if change_state(client, &desired.name, action).await? {
                    known = observed.map(|mut instance| {
                        instance.status = action.resulting_status().to_owned();
                        instance
                    });
                }
            }
            Step::NameTaken { owner } => {
                return Err(Failure::Permanent {
                    reason: "NameConflict",
                    message: format!(
                        "an LXD instance named {} already exists and belongs to {}; set spec.instanceName to use another name",
                        desired.name,
                        owner
                            .map(|uid| format!("the object with uid {uid}"))
                            .unwrap_or_else(|| "no LxdContainer".to_owned())
                    ),
                });
            }
        }
    }
    Err(Failure::Transient(LxdError::Unavailable {
        message: "still converging".to_owned(),
    }))
}

/// The instance of this container: by its name (one cheap GET), and by its owner uid across
/// the project when the name finds nothing of ours and `search_uid` says it may have another.
/// Returns whatever holds the name when it is not ours.
async fn find_instance(
    client: &LxdClient,
    uid: &str,
    name: &str,
    search_uid: bool,
) -> Result<Option<Instance>, LxdError> {
    match client.instance(name).await {
        Ok(found) if found.value.owner_uid() == Some(uid) => return Ok(Some(found.value)),
        Ok(found) => {
            return Ok(Some(
                client.instance_by_uid(uid).await?.unwrap_or(found.value),
            ));
        }
        Err(LxdError::NotFound { .. }) => {}
        Err(error) => return Err(error),
    }
    if search_uid {
        client.instance_by_uid(uid).await
    } else {
        Ok(None)
    }
}

/// Changes the instance's state and waits. `Ok(true)`: it is in the state the action leads to;
/// `Ok(false)`: it is not known to be (the next look decides).
async fn change_state(
    client: &LxdClient,
    name: &str,
    action: StateAction,
) -> Result<bool, Failure> {
    let timeout = (action == StateAction::Stop).then_some(STOP_TIMEOUT);
    let handle = client.change_state(name, action, timeout, false).await?;
    match client.wait(&handle, OPERATION_TIMEOUT).await {
        Ok(_) => Ok(true),
        Err(LxdError::OperationLost { .. }) => {
            let settled = client
                .settle_lost(&Intent::ChangeState { name, action })
                .await?;
            Ok(matches!(settled, Settlement::Done(_)))
        }
        Err(LxdError::Timeout { .. }) if action == StateAction::Stop => {
            // A graceful stop that did not finish: force it.
            let handle = client
                .change_state(name, StateAction::Stop, None, true)
                .await?;
            client.wait(&handle, OPERATION_TIMEOUT).await?;
            Ok(true)
        }
        // "already running" and the like: the next look decides.
        Err(LxdError::OperationFailed { .. } | LxdError::Invalid { .. }) => Ok(false),
        Err(error) => Err(Failure::Transient(error)),
    }
}

/// What a failed placement means for the container.
fn placement_failure(
    error: super::placement::PlacementError,
    status: &mut StatusWriter<'_>,
) -> Failure {
    use super::placement::PlacementError;
    let retry = Duration::from_secs(15);
    match error {
        PlacementError::Unschedulable(message) => {
            status.condition(CONDITION_SCHEDULED, false, "Unschedulable", message.clone());
            Failure::Waiting {
                phase: ContainerPhase::Unschedulable,
                reason: "Unschedulable",
                message,
                retry,
            }
        }
        PlacementError::InvalidPolicy(message) => {
            status.condition(CONDITION_SCHEDULED, false, "InvalidPolicy", message.clone());
            Failure::Waiting {
                phase: ContainerPhase::Pending,
                reason: "InvalidPolicy",
                message,
                retry,
            }
        }
        PlacementError::Webhook(message) => {
            status.condition(CONDITION_SCHEDULED, false, "WebhookFailed", message.clone());
            Failure::Waiting {
                phase: ContainerPhase::Pending,
                reason: "WebhookFailed",
                message,
                retry: Duration::from_secs(5),
            }
        }
        PlacementError::Lxd(error) => Failure::Transient(error),
        PlacementError::Kube(error) => Failure::Transient(LxdError::Unavailable {
            message: format!("Kubernetes API: {error}"),
        }),
    }
}

fn placement_policy_name(container: &LxdContainer) -> String {
    let placement = container.spec.placement.clone().unwrap_or_default();
    placement
        .policy
        .or_else(|| {
            placement
                .strategy
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| "fewest-instances".to_owned())
}

fn phase_of(status: &str) -> ContainerPhase {
    match status {
        "Running" => ContainerPhase::Running,
        "Frozen" => ContainerPhase::Frozen,
        _ => ContainerPhase::Stopped,
    }
}

/// Fills phase, member, addresses and Ready from the instance as it is.
async fn observe_running(client: &LxdClient, instance: &Instance, status: &mut StatusWriter<'_>) {
    status.status.phase = Some(phase_of(&instance.status));
    status.status.member = Some(instance.location.clone());
    status.condition(
        CONDITION_SCHEDULED,
        true,
        "Placed",
        format!("runs on {}", instance.location),
    );
    // Without a network interface there are no addresses: spare LXD the read.
    if instance.is_running() && instance.has_nic() {
        if let Ok(state) = client.instance_state(&instance.name).await {
            status.status.ipv4 = state.addresses("inet");
            status.status.ipv6 = state.addresses("inet6");
        }
    } else {
        status.status.ipv4.clear();
        status.status.ipv6.clear();
    }
    let wanted = match status.container.spec.state {
        DesiredState::Running => "Running",
        DesiredState::Stopped => "Stopped",
        DesiredState::Frozen => "Frozen",
    };
    let message = format!(
        "instance {} is {} on {}",
        instance.name, instance.status, instance.location
    );
    status.condition(
        CONDITION_READY,
        instance.status == wanted,
        &instance.status.clone(),
        message,
    );
}

async fn cleanup(
    container: &LxdContainer,
    api: &Api<LxdContainer>,
    ctx: &Context,
) -> Result<Action, Error> {
    let cluster_name = &container.spec.cluster_ref.name;
    let uid = container.metadata.uid.clone().unwrap_or_default();
    let mut status = StatusWriter::new(container, api);
    let client = match ctx.connections.get(cluster_name) {
        Some(connection) => connection.client.clone(),
        None if cluster_gone(ctx, cluster_name).await => return Ok(Action::await_change()),
        None => {
            status.not_ready(ContainerPhase::Deleting, "ClusterUnreachable", format!("deletion waits for LxdCluster {cluster_name} to be reachable, so that the instance is not left behind"));
            status.write().await?;
            return Err(Error::ClusterNotReady {
                cluster: cluster_name.clone(),
            });
        }
    };
    ctx.placements.release(cluster_name, &uid).await;
    let Some(instance) = client.instance_by_uid(&uid).await? else {
        return Ok(Action::await_change());
    };
    status.status.phase = Some(ContainerPhase::Deleting);
    status.write().await?;
    if instance.status != "Stopped" {
        let handle = client
            .change_state(&instance.name, StateAction::Stop, Some(STOP_TIMEOUT), false)
            .await?;
        if client
            .wait(&handle, STOP_TIMEOUT + Duration::from_secs(10))
            .await
            .is_err()
        {
            let handle = client
                .change_state(&instance.name, StateAction::Stop, None, true)
                .await?;
            let _ = client.wait(&handle, OPERATION_TIMEOUT).await;
        }
    }
    let handle = client.delete_instance(&instance.name).await?;
    match client
        .wait_or_settle(
            &handle,
            &Intent::Delete {
                name: &instance.name,
            },
            OPERATION_TIMEOUT,
        )
        .await?
    {
        Settlement::Done(_) => {
            publish(
                ctx,
                container,
                EventType::Normal,
                "Deleted",
                format!("instance {} deleted", instance.name),
            )
            .await;
            Ok(Action::await_change())
        }
        other => Err(Error::Lxd(LxdError::OperationFailed {
            message: format!("instance {} not deleted yet: {other:?}", instance.name),
        })),
    }
}

/// Whether the LxdCluster itself no longer exists (then there is nothing to clean up through).
async fn cluster_gone(ctx: &Context, name: &str) -> bool {
    let api: Api<LxdCluster> = Api::all(ctx.client.clone());
    matches!(api.get_opt(name).await, Ok(None))
}

async fn publish(
    ctx: &Context,
    container: &LxdContainer,
    type_: EventType,
    reason: &str,
    note: impl Into<String>,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note.into()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx
        .recorder
        .publish(&event, &container.object_ref(&()))
        .await
    {
        tracing::warn!(%error, "cannot publish an Event");
    }
}
