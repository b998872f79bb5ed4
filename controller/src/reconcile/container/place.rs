//! The Place step: ask placement for a member, count it in the metrics, record the decision in
//! status before anything is created (so that a crash between the two creates on that member),
//! and announce it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use lxd_operator_crds::container::{ContainerPhase, PlacementStatus};
use lxd_operator_crds::shared::CONDITION_SCHEDULED;

use super::super::context::Context;
use super::desired::DesiredInstance;
use super::failure::{Failure, placement_failure};
use super::placement::place;
use super::report::{StatusWriter, publish};
use super::rollout::Stage;
use crate::lxd::LxdClient;

/// Places the container and writes the decision into its status.
pub(super) async fn place_container(
    desired: &DesiredInstance,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let attempt = place(
        &desired.placement,
        client,
        &ctx.client,
        &ctx.containers,
        &ctx.placements,
    )
    .await;
    ctx.metrics
        .observe_placement(&attempt.policy, attempt.outcome.is_ok(), started.elapsed());
    for (what, waited) in &attempt.waits.0 {
        ctx.metrics.observe_placement_wait(what, *waited);
    }
    let decision = attempt
        .outcome
        .map_err(|error| placement_failure(error, status))?;
    ctx.rollouts
        .reached(desired.uid(), Stage::Placed, &ctx.metrics);
    let member = decision.member.clone();
    let explanation = decision.explanation.to_string();
    status.status.member = Some(member.clone());
    status.status.phase = Some(ContainerPhase::Scheduled);
    status.status.placement = Some(PlacementStatus {
        policy: Some(attempt.policy),
        explanation: explanation.clone(),
        decided_at: Some(Time(jiff::Timestamp::now())),
    });
    let message = format!("placed on {member}: {explanation}");
    status.condition(CONDITION_SCHEDULED, true, "Placed", message.clone());
    status.write().await?;
    publish(
        ctx,
        status.container,
        EventType::Normal,
        "Scheduled",
        message,
    )
    .await;
    Ok(())
}
