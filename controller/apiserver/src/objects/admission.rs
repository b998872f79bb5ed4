//! Admission of what a container asks of LXD: an LxdContainer (or an LxdContainerSet's
//! template) must be in a namespace its cluster admits (`namespaceSelector`) and within its
//! cluster's guardrails (`lxd_operator_crds::guardrails::refusals`, the same check the
//! controller makes), checked when it is created and when its spec changes. A refusal is a 422
//! naming the field, the value and the rule, and nothing is stored.
//!
//! An LxdContainer is also held to its namespace's quota on the cluster (403 with the figures,
//! as a Kubernetes ResourceQuota refuses), when it is created, moved to another cluster or
//! asks for more.
//!
//! Only what a write adds is refused (as Kubernetes ratchets CRD validation): an object
//! admitted before its cluster's policy tightened keeps the values it had, so the controller's
//! own writes (finalizers, status) and a user's unrelated edits still go through; the
//! controller reports that it would now be refused.
//!
//! The decision is `lxd_operator_crds::admission` (pure), the same the operator's validating
//! webhook makes on Kubernetes; this file reads what it needs from the store, and [`refusal`]
//! words the answer for both.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use lxd_operator_crds::admission::{ContainerWrite, Decision};
use lxd_operator_crds::container::LxdContainerSpec;
use lxd_operator_crds::guardrails::Violation;
use lxd_operator_crds::quota::Usage;
use lxd_operator_crds::{GROUP, LxdClusterSpec};
use serde_json::Value;

use super::ApiState;
use crate::registry::{Resource, Role};
use crate::schema::validation::{FieldError, FieldErrorKind};
use crate::status::ApiError;

/// Where an LxdContainer's own spec is.
const CONTAINER_SPEC: &str = "/spec";

/// The storage key of the LxdCluster `name` (cluster-scoped).
fn cluster_key(name: &str) -> String {
    format!("/{GROUP}/lxdclusters/-/{name}")
}

impl ApiState {
    /// Refuses `object` when its container spec asks what its cluster's guardrails deny and
    /// `previous` (the object before this write) did not already ask, or takes its namespace
    /// over its quota (the decision: [`ContainerWrite::decide`]). A write checked against a
    /// quota gets the admission turn, to hold until it is stored: quotas count what is
    /// stored, and two writes checked at the same moment must not each see the room the other
    /// takes.
    pub(super) fn admit(
        &self,
        resource: &Resource,
        object: &Value,
        previous: Option<&Value>,
        name: &str,
    ) -> Result<Option<MutexGuard<'_, ()>>, ApiError> {
        let Role::ContainerSpecAt(pointer) = resource.role else {
            return Ok(None);
        };
        let Some(spec) = container_spec(object, pointer) else {
            // The schema has refused a spec of the wrong shape already.
            return Ok(None);
        };
        let cluster = &spec.cluster_ref.name;
        let cluster_spec = self.cluster_spec(cluster)?;
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let namespace_labels = if ContainerWrite::needs_namespace_labels(cluster_spec.as_ref()) {
            self.namespace_labels(namespace)?
        } else {
            BTreeMap::new()
        };
        let previous = previous.and_then(|previous| container_spec(previous, pointer));
        let write = ContainerWrite {
            pointer,
            spec: &spec,
            previous: previous.as_ref(),
            cluster: cluster_spec.as_ref(),
            namespace,
            namespace_labels: &namespace_labels,
        };
        let (turn, used) = match write.quota() {
            Some(_) => {
                let turn = self
                    .admission
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let used = self.usage(resource, namespace, cluster, name)?;
                (Some(turn), used)
            }
            None => (None, Usage::default()),
        };
        match refusal(
            write.decide(used),
            &resource.group,
            &resource.kind,
            &resource.plural,
            name,
        ) {
            Some(error) => Err(error),
            None => Ok(turn),
        }
    }

    /// What the other LxdContainers of `namespace` on `cluster` hold.
    fn usage(
        &self,
        resource: &Resource,
        namespace: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Usage, ApiError> {
        let (objects, _) = self.store.list(&resource.prefix(Some(namespace)))?;
        let specs: Vec<LxdContainerSpec> = objects
            .iter()
            .filter(|object| object["metadata"]["name"].as_str() != Some(name))
            .filter_map(|object| container_spec(object, CONTAINER_SPEC))
            .filter(|spec| spec.cluster_ref.name == cluster)
            .collect();
        Ok(Usage::of(specs.iter()))
    }

    /// The spec of the LxdCluster `name`, if it exists (yet).
    fn cluster_spec(&self, name: &str) -> Result<Option<LxdClusterSpec>, ApiError> {
        let stored = self.store.get(&cluster_key(name))?;
        Ok(stored.and_then(|cluster| serde_json::from_value(cluster["spec"].clone()).ok()))
    }

    /// The labels of the Namespace `name`.
    fn namespace_labels(&self, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
        let stored = self.store.get(&format!("/namespaces/-/{name}"))?;
        Ok(stored
            .and_then(|namespace| {
                serde_json::from_value(namespace["metadata"]["labels"].clone()).ok()
            })
            .unwrap_or_default())
    }
}

/// The error a refused write is answered with (`None` when admitted), the same from this
/// server and from the operator's admission webhook on Kubernetes: 422 with a field error per
/// violation, or 403 with the quota's figures. `group`, `kind`, `plural` and `name`: the object's.
pub fn refusal(
    decision: Decision,
    group: &str,
    kind: &str,
    plural: &str,
    name: &str,
) -> Option<ApiError> {
    match decision {
        Decision::Admitted => None,
        Decision::Invalid(violations) => {
            let errors: Vec<FieldError> = violations.into_iter().map(field_error).collect();
            Some(ApiError::invalid(group, kind, name, &errors))
        }
        Decision::Forbidden(why) => Some(ApiError::forbidden(group, plural, name, &why)),
    }
}

fn field_error(violation: Violation) -> FieldError {
    FieldError {
        field: violation.field,
        kind: FieldErrorKind::Invalid,
        message: format!("Invalid value: {:?}: {}", violation.value, violation.rule),
    }
}

fn container_spec(object: &Value, pointer: &str) -> Option<LxdContainerSpec> {
    serde_json::from_value(object.pointer(pointer)?.clone()).ok()
}
