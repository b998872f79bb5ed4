//! The LxdPlacementPolicy reconciler: compiles the policy and reports in `Ready` whether every
//! plugin it names exists and its arguments are valid, so that a typo shows before a container
//! is stuck on it.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use lxd_operator_crds::shared::CONDITION_READY;
use lxd_operator_crds::{LxdPlacementPolicy, LxdPlacementPolicyStatus};

use super::context::{Context, Error};
use super::status::{condition, set_condition, write_status};
use crate::placement::policy::from_spec;

/// Reconciles one LxdPlacementPolicy.
#[tracing::instrument(skip_all, fields(object = %policy.name_any()))]
pub async fn reconcile(
    policy: Arc<LxdPlacementPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let previous = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let (ok, reason, message) = match from_spec(&policy.name_any(), &policy.spec) {
        Ok(compiled) => (
            true,
            "Valid",
            format!(
                "{} filters, {} scorers{}",
                compiled.filters.len(),
                compiled.scorers.len(),
                if compiled.webhook.is_some() {
                    ", webhook"
                } else {
                    ""
                }
            ),
        ),
        Err(error) => (false, "InvalidPolicy", error.to_string()),
    };
    let mut status = LxdPlacementPolicyStatus {
        observed_generation: generation,
        conditions: previous.conditions.clone(),
    };
    set_condition(
        &mut status.conditions,
        condition(
            &previous.conditions,
            CONDITION_READY,
            ok,
            reason,
            message,
            generation,
        ),
    );
    let api: Api<LxdPlacementPolicy> = Api::all(ctx.client.clone());
    write_status(&api, &policy, policy.status.as_ref(), &status).await?;
    Ok(Action::await_change())
}

/// Retry soon on API errors.
pub fn error_policy(_policy: Arc<LxdPlacementPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "LxdPlacementPolicy reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
