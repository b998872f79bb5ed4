//! The LxdContainer reconciler, as a pipeline: resolve the cluster, validate the spec once into
//! a [`desired::DesiredInstance`] (what LXD should hold and what placement is asked), converge
//! ([`converge`]: decide the next step with [`decide::next_step`], pure, carry it out, look
//! again), and write status ([`report`]). Deletion is [`cleanup`].
//!
//! Before anything else, the cluster's guardrails ([`admission`]); before converging, the
//! container's member is looked at: [`member_failure`] (wait for an
//! offline member, or reschedule; delete instances left behind once their member is back) and
//! [`moves`] (move off a drained member, within its set's disruption [`budget`]).
//!
//! The steps, one job each: [`place`] (with the [`placement`] step's wiring of the engine),
//! [`create`], [`update`], [`state`], [`husk`] (a create cut off, made again); [`failure`] says
//! what a step's failure means; [`rollout`] times a new container's stages.

pub mod admission;
pub mod budget;
pub mod cleanup;
pub mod converge;
pub mod create;
pub mod decide;
pub mod desired;
pub mod failure;
pub mod husk;
pub mod member_failure;
pub mod moves;
pub mod naming;
pub mod place;
pub mod placement;
pub mod project;
pub mod report;
pub mod rollout;
pub mod state;
pub mod update;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::container::ContainerPhase;
use lxd_operator_crds::shared::{CONDITION_ADMITTED, CONDITION_READY};

use self::admission::Admission;
use self::converge::converge;
use self::desired::DesiredInstance;
use self::failure::Failure;
use self::report::{StatusWriter, publish};
use self::rollout::Stage;
use super::backoff::Backoff;
use super::context::{Context, Error};
use crate::lxd::LxdClient;
use crate::lxd::types::Instance;

/// The finalizer that keeps an LxdContainer until its instance is deleted.
pub const FINALIZER: &str = "lxd-operator.dev/instance";
/// How long one LXD operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a container with an instance left behind on an offline member looks again.
const LEFT_BEHIND_RECHECK: Duration = Duration::from_secs(10);
/// How often a container waiting for room in its namespace's quota looks again (nothing wakes it
/// when another container of the namespace goes).
const QUOTA_RECHECK: Duration = Duration::from_secs(10);
/// How long a graceful stop may take before it is forced.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconciles one LxdContainer (the finalizer wraps apply and cleanup).
#[tracing::instrument(skip_all, fields(object = %format!("{}/{}", container.namespace().unwrap_or_default(), container.name_any())))]
pub async fn reconcile(container: Arc<LxdContainer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = container
        .namespace()
        .unwrap_or_else(|| "default".to_owned());
    let api: Api<LxdContainer> = Api::namespaced(ctx.client.clone(), &namespace);
    if container.status.is_none() && container.metadata.deletion_timestamp.is_none() {
        ctx.rollouts
            .begin(container.metadata.uid.as_deref().unwrap_or_default());
    }
    finalizer(&api, FINALIZER, container, |event| async {
        match event {
            FinalizerEvent::Apply(container) => apply(&container, &api, &ctx).await,
            FinalizerEvent::Cleanup(container) => cleanup::cleanup(&container, &api, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// What to do when a reconcile fails: LXD and API hiccups are retried soon.
pub fn error_policy(container: Arc<LxdContainer>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(container = %format!("{}/{}", container.namespace().unwrap_or_default(), container.name_any()), %error, "LxdContainer reconcile failed");
    let backoff = if error.is_transient() {
        TRANSIENT_BACKOFF
    } else {
        ERROR_BACKOFF
    };
    Action::requeue(ctx.backoffs.failed(&uid_of(&container), backoff))
}

/// After a failure that may pass by itself (LXD unavailable, a conflict, a lost operation).
/// Capped low: a member that comes back must not find its containers asleep for minutes
/// (nothing else wakes them when it does).
const TRANSIENT_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(2),
    max: Duration::from_secs(30),
};
/// After another failed reconcile (the API failed, say).
const ERROR_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(15),
    max: Duration::from_secs(120),
};
/// After LXD refused what the spec asks (it will refuse again until something changes).
const REFUSED_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(60),
    max: Duration::from_secs(1800),
};

fn uid_of(container: &LxdContainer) -> String {
    container.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            container.namespace().unwrap_or_default(),
            container.name_any()
        )
    })
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
    let mut desired = match DesiredInstance::from_container(container) {
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
    let cluster_name = &desired.placement.cluster.clone();

    // What the cluster's guardrails refuse never reaches LXD.
    let placed = status.status.member.is_some();
    let cluster = ctx.cluster(cluster_name);
    let namespace_labels = match cluster
        .as_ref()
        .and_then(|c| c.spec.namespace_selector.as_ref())
    {
        Some(_) => namespace_labels(ctx, container).await?,
        None => Default::default(),
    };
    match admission::admit(container, cluster.as_deref(), &namespace_labels, placed) {
        Admission::Admitted => status.condition(
            CONDITION_ADMITTED,
            true,
            "WithinGuardrails",
            format!("within the guardrails of cluster {cluster_name}"),
        ),
        Admission::Refused { message } => {
            status.condition(CONDITION_ADMITTED, false, "PolicyDenied", message.clone());
            status.not_ready(ContainerPhase::Failed, "PolicyDenied", message.clone());
            status.write().await?;
            if ctx
                .backoffs
                .warn_once(&uid_of(container), "PolicyDenied", &message)
            {
                publish(ctx, container, EventType::Warning, "PolicyDenied", message).await;
            }
            // The cluster's policy may open: look again at the resync.
            return Ok(Action::requeue(ctx.resync));
        }
        Admission::WouldNowBeRefused { message } => {
            status.condition(
                CONDITION_ADMITTED,
                false,
                "WouldNowBeRefused",
                message.clone(),
            );
            status.write().await?;
            if ctx
                .backoffs
                .warn_once(&uid_of(container), "WouldNowBeRefused", &message)
            {
                publish(
                    ctx,
                    container,
                    EventType::Warning,
                    "WouldNowBeRefused",
                    message,
                )
                .await;
            }
            return Ok(Action::requeue(ctx.resync));
        }
    }
    if let Some(message) = cluster
        .as_deref()
        .filter(|c| !placed && c.spec.quotas.is_some())
        .and_then(|c| admission::over_quota(container, c, &ctx.containers.state()))
    {
        status.condition(CONDITION_ADMITTED, false, "QuotaExceeded", message.clone());
        status.not_ready(ContainerPhase::Pending, "QuotaExceeded", message.clone());
        status.write().await?;
        if ctx
            .backoffs
            .warn_once(&uid_of(container), "QuotaExceeded", &message)
        {
            publish(ctx, container, EventType::Warning, "QuotaExceeded", message).await;
        }
        return Ok(Action::requeue(QUOTA_RECHECK));
    }
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
    let client =
        match in_its_project(container, cluster.as_deref(), &client, ctx, &mut status).await {
            Ok(client) => client,
            Err(error) => {
                status.not_ready(
                    ContainerPhase::Pending,
                    "ProjectNotReady",
                    error.to_string(),
                );
                status.write().await?;
                return Err(Error::Lxd(error));
            }
        };

    match reconcile_instance(&mut desired, &client, api, ctx, &mut status).await {
        Ok((instance, recheck)) => {
            ctx.backoffs.succeeded(&uid_of(container));
            status.observe(&client, &instance).await;
            status.write().await?;
            if status.is_ready() {
                ctx.rollouts
                    .reached(desired.uid(), Stage::Ready, &ctx.metrics);
            }
            Ok(Action::requeue(
                recheck.map_or(ctx.resync, |r| r.min(ctx.resync)),
            ))
        }
        Err(Failure::Permanent { reason, message }) => {
            status.not_ready(ContainerPhase::Failed, reason, message.clone());
            status.write().await?;
            let uid = uid_of(container);
            if ctx.backoffs.warn_once(&uid, reason, &message) {
                publish(ctx, container, EventType::Warning, reason, message).await;
            }
            Ok(Action::requeue(ctx.backoffs.failed(&uid, REFUSED_BACKOFF)))
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
        Err(Failure::Refused { reason, message }) => {
            status.condition(CONDITION_READY, false, reason, message.clone());
            status.write().await?;
            let uid = uid_of(container);
            tracing::warn!(container = %uid, reason, %message, "LXD refuses a state change");
            if ctx.backoffs.warn_once(&uid, reason, &message) {
                publish(ctx, container, EventType::Warning, reason, message).await;
            }
            Ok(Action::requeue(
                ctx.backoffs.failed(&uid, TRANSIENT_BACKOFF),
            ))
        }
        Err(Failure::Unfinished { steps }) => {
            tracing::debug!(container = %uid_of(container), ?steps, "converging goes on");
            status.condition(
                CONDITION_READY,
                false,
                "Converging",
                format!(
                    "took {} steps towards the desired instance ({}); going on",
                    steps.len(),
                    steps.join(", ")
                ),
            );
            status.write().await?;
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Err(Failure::Lxd(error)) => {
            status.condition(CONDITION_READY, false, "LxdError", error.to_string());
            status.write().await?;
            Err(Error::Lxd(error))
        }
        // The API failed: a status write would most likely fail too.
        Err(Failure::Kube(error)) => Err(Error::Kube(error)),
    }
}

/// The client of the container's LXD project (recorded in status), its namespace's project
/// made first when the cluster gives namespaces projects of their own.
async fn in_its_project(
    container: &LxdContainer,
    cluster: Option<&lxd_operator_crds::LxdCluster>,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<LxdClient, crate::lxd::LxdError> {
    let Some(cluster) = cluster else {
        return Ok(client.clone());
    };
    let namespace = container
        .namespace()
        .unwrap_or_else(|| "default".to_owned());
    let project_name = project::project_of(&cluster.spec, &namespace, &status.status);
    let cluster_name = cluster.name_any();
    if let Some(intent) = project::intent(&cluster_name, &cluster.spec, &namespace)
        && project_name == cluster.spec.project_for(&namespace)
    {
        ctx.projects
            .ensure(client, &cluster_name, &project_name, &intent)
            .await?;
    }
    status.status.project = Some(project_name.clone());
    Ok(client.in_project(&project_name))
}

/// The labels of the container's namespace (its cluster admits namespaces by them).
async fn namespace_labels(
    ctx: &Context,
    container: &LxdContainer,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    let namespace = container
        .namespace()
        .unwrap_or_else(|| "default".to_owned());
    Ok(namespaces
        .get_opt(&namespace)
        .await?
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default())
}

/// The member first (instances left behind, an offline member, a drain), then converging.
/// Returns the instance, and how soon to look again when that is sooner than the resync.
async fn reconcile_instance(
    desired: &mut DesiredInstance,
    client: &LxdClient,
    api: &Api<LxdContainer>,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<(Instance, Option<Duration>), Failure> {
    let mut drain = moves::DrainOutcome::default();
    if let Some(cluster) = ctx.cluster(&desired.placement.cluster) {
        member_failure::remove_left_behind(&cluster, client, ctx, status).await?;
        member_failure::check_member(desired, &cluster, api, ctx, status).await?;
        drain = moves::drain(desired, &cluster, client, ctx, status).await?;
    }
    let instance = converge(desired, client, ctx, status).await?;
    // The move's slot is free once the moved instance is as desired again.
    drop(drain.permit);
    drop(drain.disruption);
    // An instance left behind is deleted soon after its member returns, even should the
    // wake-up of its return be missed.
    let recheck = if status.status.left_behind.is_empty() {
        drain.recheck
    } else {
        Some(
            drain
                .recheck
                .map_or(LEFT_BEHIND_RECHECK, |r| r.min(LEFT_BEHIND_RECHECK)),
        )
    };
    Ok((instance, recheck))
}
