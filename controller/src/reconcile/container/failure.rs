//! Why converging stopped short, and what that means: a permanent failure waits for a change of
//! spec, a wait retries later with its reason shown, an LXD or API hiccup backs off.

use std::time::Duration;

use lxd_operator_crds::container::ContainerPhase;
use lxd_operator_crds::shared::CONDITION_SCHEDULED;

use super::placement::PlacementError;
use super::report::StatusWriter;
use crate::lxd::LxdError;

/// Why converging stopped short.
#[derive(Debug)]
pub(super) enum Failure {
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
    /// An LXD hiccup: back off and retry.
    Lxd(LxdError),
    /// The Kubernetes API failed (a status write, a read for placement): back off and retry.
    Kube(kube::Error),
    /// LXD refused a state change again and again (a start that fails): retried with a
    /// growing backoff, LXD's message in the Ready condition and an Event.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// Every step of this reconcile moved the instance on, and it is not there yet: go on soon.
    /// The steps taken, for the Ready condition.
    Unfinished { steps: Vec<&'static str> },
}

impl Failure {
    /// LXD answered "not found" (a member, an image, a storage volume).
    pub(super) fn is_not_found(&self) -> bool {
        matches!(
            self,
            Failure::Permanent {
                reason: "NotFound",
                ..
            } | Failure::Lxd(LxdError::NotFound { .. })
        )
    }
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
            other => Failure::Lxd(other),
        }
    }
}

impl From<kube::Error> for Failure {
    fn from(error: kube::Error) -> Self {
        Failure::Kube(error)
    }
}

/// What a failed placement means for the container; the Scheduled condition says why.
pub(super) fn placement_failure(error: PlacementError, status: &mut StatusWriter<'_>) -> Failure {
    let message = error.to_string();
    let (phase, reason, retry) = match error {
        PlacementError::Unschedulable(_) => (
            ContainerPhase::Unschedulable,
            "Unschedulable",
            Duration::from_secs(15),
        ),
        PlacementError::Policy(_) => (
            ContainerPhase::Pending,
            "InvalidPolicy",
            Duration::from_secs(15),
        ),
        PlacementError::Webhook(_) => (
            ContainerPhase::Pending,
            "WebhookFailed",
            Duration::from_secs(5),
        ),
        PlacementError::KubernetesNotSynced => (
            ContainerPhase::Pending,
            "KubernetesNotSynced",
            Duration::from_secs(5),
        ),
        PlacementError::Lxd(error) => return Failure::Lxd(error),
        PlacementError::Kube(error) => return Failure::Kube(error),
    };
    status.condition(CONDITION_SCHEDULED, false, reason, message.clone());
    Failure::Waiting {
        phase,
        reason,
        message,
        retry,
    }
}
