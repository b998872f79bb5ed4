//! The Update step: replace the instance's writable part, guarded by its ETag. A change LXD
//! applies only to a stopped instance is reported, never forced.

use std::time::Duration;

use kube::runtime::events::EventType;

use super::super::context::Context;
use super::OPERATION_TIMEOUT;
use super::desired::DesiredInstance;
use super::failure::Failure;
use super::report::{StatusWriter, phase_of, publish};
use crate::lxd::types::InstancePut;
use crate::lxd::{LxdClient, LxdError};

/// Applies `put` to the instance. A conflict (it changed since it was read) is no failure: the
/// next step reads it again.
pub(super) async fn update_instance(
    desired: &DesiredInstance,
    put: &InstancePut,
    client: &LxdClient,
    ctx: &Context,
    status: &StatusWriter<'_>,
) -> Result<(), Failure> {
    let current = client.instance(&desired.name).await?;
    let handle = match client
        .update_instance(&desired.name, put, current.etag.as_deref())
        .await
    {
        Ok(handle) => handle,
        Err(LxdError::Conflict { .. }) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    match client.wait(&handle, OPERATION_TIMEOUT).await {
        Ok(_) => {
            publish(
                ctx,
                status.container,
                EventType::Normal,
                "Updated",
                "instance configuration updated",
            )
            .await;
            Ok(())
        }
        Err(LxdError::Invalid { message } | LxdError::OperationFailed { message }) => {
            Err(Failure::Waiting {
                phase: phase_of(&current.value.status),
                reason: "UpdateRefused",
                message: format!("LXD refused the change: {message}"),
                retry: Duration::from_secs(30),
            })
        }
        Err(error) => Err(Failure::Lxd(error)),
    }
}
