//! The Create step: make the instance on the chosen member, or adopt the one an earlier attempt
//! of ours made; a member that is gone sends the container back to placement.

use std::time::Duration;

use kube::runtime::events::EventType;
use lxd_operator_crds::container::ContainerPhase;

use super::super::context::Context;
use super::OPERATION_TIMEOUT;
use super::desired::DesiredInstance;
use super::failure::Failure;
use super::report::{StatusWriter, publish};
use super::rollout::Stage;
use crate::lxd::types::{Instance, Target};
use crate::lxd::{CreateOutcome, LxdClient, LxdError};

/// Creates (or adopts) the instance on `member` and returns it as created.
pub(super) async fn create_instance(
    desired: &DesiredInstance,
    member: &str,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<Instance, Failure> {
    status.status.phase = Some(ContainerPhase::Creating);
    let created = client
        .create_or_adopt_by_name(
            &desired.create_request(),
            &Target::Member(member.to_owned()),
            desired.uid(),
            OPERATION_TIMEOUT,
        )
        .await;
    let outcome = match created {
        Ok(outcome) => outcome,
        Err(error) => {
            ctx.placements
                .release(&desired.placement.cluster, desired.uid())
                .await;
            return Err(create_failure(error, member, client, status).await);
        }
    };
    ctx.rollouts
        .reached(desired.uid(), Stage::Created, &ctx.metrics);
    let (reason, verb) = match &outcome {
        CreateOutcome::Created(_) => ("Created", "created"),
        CreateOutcome::Adopted(_) => ("Adopted", "adopted"),
    };
    publish(
        ctx,
        status.container,
        EventType::Normal,
        reason,
        format!("instance {} {verb} on {member}", desired.name),
    )
    .await;
    Ok(outcome.instance().clone())
}

/// What a failed create means. LXD answers "not found" both for a member that is gone and for
/// an image that is missing; the member list tells them apart.
async fn create_failure(
    error: LxdError,
    member: &str,
    client: &LxdClient,
    status: &mut StatusWriter<'_>,
) -> Failure {
    match error {
        LxdError::AlreadyExists { message } => Failure::Permanent {
            reason: "NameConflict",
            message,
        },
        LxdError::NotFound { message } if member_gone(client, member).await => {
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
    }
}

async fn member_gone(client: &LxdClient, member: &str) -> bool {
    client
        .members()
        .await
        .is_ok_and(|members| !members.iter().any(|m| m.server_name == member))
}
