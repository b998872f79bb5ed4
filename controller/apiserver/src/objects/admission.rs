//! Admission of what a container asks of LXD: an LxdContainer (or an LxdContainerSet's
//! template) is checked against its cluster's guardrails (`lxd_operator_crds::guardrails`, the
//! same rules the controller applies) when it is created and when its spec changes. A refusal
//! is a 422 naming the field, the value and the rule, and nothing is stored.
//!
//! Only what a write adds is refused (as Kubernetes ratchets CRD validation): an object
//! admitted before its cluster's policy tightened keeps the values it had, so the controller's
//! own writes (finalizers, status) and a user's unrelated edits still go through; the
//! controller reports that it would now be refused.

use lxd_operator_crds::container::LxdContainerSpec;
use lxd_operator_crds::guardrails::{Guardrails, Violation};
use lxd_operator_crds::{GROUP, LxdClusterSpec};
use serde_json::Value;

use super::ApiState;
use crate::registry::{Resource, Role};
use crate::schema::validation::{FieldError, FieldErrorKind};
use crate::status::ApiError;

/// The storage key of the LxdCluster `name` (cluster-scoped).
fn cluster_key(name: &str) -> String {
    format!("/{GROUP}/lxdclusters/-/{name}")
}

impl ApiState {
    /// Refuses `object` when its container spec asks what its cluster's guardrails deny and
    /// `previous` (the object before this write) did not already ask.
    pub(super) fn admit(
        &self,
        resource: &Resource,
        object: &Value,
        previous: Option<&Value>,
        name: &str,
    ) -> Result<(), ApiError> {
        let Role::ContainerSpecAt(pointer) = resource.role else {
            return Ok(());
        };
        let Some(spec) = container_spec(object, pointer) else {
            // The schema has refused a spec of the wrong shape already.
            return Ok(());
        };
        let cluster = &spec.cluster_ref.name;
        let guardrails = self.guardrails_of(cluster)?;
        let path = pointer.trim_start_matches('/').replace('/', ".");
        let before: Vec<Violation> = previous
            .and_then(|previous| container_spec(previous, pointer))
            .map(|previous| guardrails.check(cluster, &path, &previous))
            .unwrap_or_default();
        let errors: Vec<FieldError> = guardrails
            .check(cluster, &path, &spec)
            .into_iter()
            .filter(|violation| !before.contains(violation))
            .map(|violation| FieldError {
                field: violation.field,
                kind: FieldErrorKind::Invalid,
                message: format!("Invalid value: {:?}: {}", violation.value, violation.rule),
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid(
            &resource.group,
            &resource.kind,
            name,
            &errors,
        ))
    }

    /// The guardrails of the LxdCluster `name`: the safe defaults when it has none, or does not
    /// exist (yet).
    fn guardrails_of(&self, name: &str) -> Result<Guardrails, ApiError> {
        let stored = self.store.get(&cluster_key(name))?;
        Ok(stored
            .and_then(|cluster| {
                serde_json::from_value::<LxdClusterSpec>(cluster["spec"].clone()).ok()
            })
            .and_then(|spec| spec.guardrails)
            .unwrap_or_default())
    }
}

fn container_spec(object: &Value, pointer: &str) -> Option<LxdContainerSpec> {
    serde_json::from_value(object.pointer(pointer)?.clone()).ok()
}
