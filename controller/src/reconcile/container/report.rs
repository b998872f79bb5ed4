//! What a container reports: its status (built up during a reconcile and written once, only
//! when it changed), its Events, and the status read off its instance as it is.

use kube::Resource;
use kube::api::Api;
use kube::runtime::events::{Event as KubeEvent, EventType};
use lxd_operator_crds::container::{ContainerPhase, DesiredState};
use lxd_operator_crds::shared::{CONDITION_READY, CONDITION_SCHEDULED};
use lxd_operator_crds::{LxdContainer, LxdContainerStatus};

use super::super::context::Context;
use super::super::status::{condition, set_condition, write_status};
use crate::lxd::LxdClient;
use crate::lxd::types::Instance;

/// A status under construction, with the previous one for condition times.
pub(super) struct StatusWriter<'a> {
    pub(super) container: &'a LxdContainer,
    api: &'a Api<LxdContainer>,
    /// The status as the reconcile found it.
    pub(super) previous: LxdContainerStatus,
    /// The status as it will be written.
    pub(super) status: LxdContainerStatus,
}

impl<'a> StatusWriter<'a> {
    pub(super) fn new(container: &'a LxdContainer, api: &'a Api<LxdContainer>) -> Self {
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

    pub(super) fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
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

    pub(super) fn not_ready(
        &mut self,
        phase: ContainerPhase,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.status.phase = Some(phase);
        self.condition(CONDITION_READY, false, reason, message);
    }

    /// Whether the status being written says Ready.
    pub(super) fn is_ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION_READY && c.status == "True")
    }

    pub(super) async fn write(&self) -> Result<(), kube::Error> {
        write_status(
            self.api,
            self.container,
            self.container.status.as_ref(),
            &self.status,
        )
        .await
    }

    /// Fills phase, member, addresses and Ready from the instance as it is.
    pub(super) async fn observe(&mut self, client: &LxdClient, instance: &Instance) {
        self.status.phase = Some(phase_of(&instance.status));
        self.status.member = Some(instance.location.clone());
        self.condition(
            CONDITION_SCHEDULED,
            true,
            "Placed",
            format!("runs on {}", instance.location),
        );
        // Without a network interface there are no addresses: spare LXD the read.
        if instance.is_running() && instance.has_nic() {
            if let Ok(state) = client.instance_state(&instance.name).await {
                self.status.ipv4 = state.addresses("inet");
                self.status.ipv6 = state.addresses("inet6");
            }
        } else {
            self.status.ipv4.clear();
            self.status.ipv6.clear();
        }
        let wanted = match self.container.spec.state {
            DesiredState::Running => "Running",
            DesiredState::Stopped => "Stopped",
            DesiredState::Frozen => "Frozen",
        };
        let message = format!(
            "instance {} is {} on {}",
            instance.name, instance.status, instance.location
        );
        self.condition(
            CONDITION_READY,
            instance.status == wanted,
            &instance.status.clone(),
            message,
        );
    }
}

/// The phase an instance in LXD's `status` is in.
pub(super) fn phase_of(status: &str) -> ContainerPhase {
    match status {
        "Running" => ContainerPhase::Running,
        "Frozen" => ContainerPhase::Frozen,
        _ => ContainerPhase::Stopped,
    }
}

/// Publishes an Event about the container (a failure to publish is logged, never fatal).
pub(super) async fn publish(
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
