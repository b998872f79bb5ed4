//! The husk of a create cut off: when a member's daemon dies while it creates an instance, LXD
//! can keep the instance's record without its storage volume. The record carries our uid, so
//! it is adopted as ours, but every start fails ("Instance storage pool not found"). A start
//! that fails as "not found" therefore looks for the volume; a husk is deleted (LXD allows
//! that) so that the next step creates the instance again on the same member.
//!
//! A create cut off later leaves the volume but not all of the instance (LXD 5.0 was seen
//! refusing every start with "Failed to handle idmapped storage: Failed expanding symlinks":
//! the link from the instance's directory to its volume was never made). An instance that
//! never ran (LXD has not recorded `volatile.last_state.power`, which it writes at the first
//! start) holds nothing but its image, so one whose start LXD refuses again and again is
//! deleted and created again too; an instance that ran once is never deleted for a failed
//! start (its data is the user's).

use kube::runtime::events::EventType;

use super::super::context::Context;
use super::OPERATION_TIMEOUT;
use super::failure::Failure;
use super::report::{StatusWriter, publish};
use crate::lxd::LxdClient;

/// The config key where LXD keeps an instance's last power state, from its first start on.
const LAST_POWER_STATE_KEY: &str = "volatile.last_state.power";

/// Deletes the instance `name` if it is a husk; says whether it was.
pub(super) async fn remove_if_husk(
    client: &LxdClient,
    name: &str,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<bool, Failure> {
    // Read afresh: the instance a create step hands on lacks the devices LXD expands.
    let instance = client.instance(name).await?.value;
    if client.instance_volume_exists(&instance).await? {
        return Ok(false);
    }
    let handle = client.delete_instance(name).await?;
    client.wait(&handle, OPERATION_TIMEOUT).await?;
    tracing::warn!(instance = name, member = %instance.location, "deleted an instance without its storage volume, to create it again");
    publish(
        ctx,
        status.container,
        EventType::Warning,
        "Recreating",
        format!(
            "instance {name} on {} had no storage volume (a create cut off, as when its member's daemon dies); deleted to create it again",
            instance.location
        ),
    )
    .await;
    Ok(true)
}

/// Deletes the instance `name` when it never ran (see the module's comment); says whether it
/// did.
pub(super) async fn remove_if_never_started(
    client: &LxdClient,
    name: &str,
    refusal: &str,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<bool, Failure> {
    let instance = client.instance(name).await?.value;
    // LXD records the power state at the first start; an instance without it never ran.
    let never_started = !instance.config.contains_key(LAST_POWER_STATE_KEY);
    if !never_started || instance.status != "Stopped" {
        return Ok(false);
    }
    let handle = client.delete_instance(name).await?;
    client.wait(&handle, OPERATION_TIMEOUT).await?;
    tracing::warn!(instance = name, member = %instance.location, %refusal, "deleted an instance that never started and cannot start, to create it again");
    publish(
        ctx,
        status.container,
        EventType::Warning,
        "Recreating",
        format!(
            "instance {name} on {} never started and LXD refuses to start it ({refusal}): a create cut off; deleted to create it again",
            instance.location
        ),
    )
    .await;
    Ok(true)
}
