//! Deleting a container: its instance is stopped and deleted before the finalizer lets the
//! object go; a lost delete operation is settled from what LXD holds.

use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use lxd_operator_crds::container::ContainerPhase;
use lxd_operator_crds::{LxdCluster, LxdContainer};

use super::super::context::{Context, Error};
use super::report::{StatusWriter, publish};
use super::{OPERATION_TIMEOUT, STOP_TIMEOUT};
use crate::lxd::types::{Instance, StateAction};
use crate::lxd::{Intent, LxdClient, Settlement};

/// Deletes the container's instance (stopping it first), wherever it is and whatever its name.
/// Waits for an unreachable cluster rather than leave the instance behind.
pub(super) async fn cleanup(
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
    // Where its instance was made, whatever the cluster's project mode is now.
    let client = match container.status.as_ref().and_then(|s| s.project.as_deref()) {
        Some(project) => client.in_project(project),
        None => client,
    };
    ctx.placements.release(cluster_name, &uid).await;
    ctx.rollouts.forget(&uid);
    // One instance, or more after a reschedule left one behind on a failed member: each is
    // deleted (one on a member still offline waits for it, as the current one would).
    let instances = client.instances_by_uid(&uid).await?;
    if instances.is_empty() {
        return Ok(Action::await_change());
    }
    status.status.phase = Some(ContainerPhase::Deleting);
    status.write().await?;
    for instance in &instances {
        delete_instance(&client, instance, container, ctx).await?;
    }
    Ok(Action::await_change())
}

/// Stops (gracefully, then by force) and deletes one instance of the container.
async fn delete_instance(
    client: &LxdClient,
    instance: &Instance,
    container: &LxdContainer,
    ctx: &Context,
) -> Result<(), Error> {
    let client = client.for_instance(instance);
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
            Ok(())
        }
        other => Err(Error::NotDeletedYet {
            instance: instance.name.clone(),
            state: format!("{other:?}"),
        }),
    }
}

/// Whether the LxdCluster itself no longer exists (then there is nothing to clean up through).
/// When the API cannot tell, it is taken to exist: the instance is not left behind.
async fn cluster_gone(ctx: &Context, name: &str) -> bool {
    let api: Api<LxdCluster> = Api::all(ctx.client.clone());
    matches!(api.get_opt(name).await, Ok(None))
}
