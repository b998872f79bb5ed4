//! A CustomResourceDefinition written: its name checked, its kind served (or no longer served)
//! and its status set as the Kubernetes API server sets it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::ApiState;
use super::write::now;
use crate::status::ApiError;

fn decode(object: &Value) -> Result<CustomResourceDefinition, ApiError> {
    serde_json::from_value(object.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid CustomResourceDefinition: {e}")))
}

/// A CRD is named after what it serves: `<plural>.<group>`.
pub(super) fn check_name(object: &Value) -> Result<(), ApiError> {
    let crd = decode(object)?;
    let expected = format!("{}.{}", crd.spec.names.plural, crd.spec.group);
    if crd.metadata.name.as_deref() != Some(expected.as_str()) {
        return Err(ApiError::bad_request(format!(
            "metadata.name must be spec.names.plural+\".\"+spec.group: {expected}"
        )));
    }
    Ok(())
}

impl ApiState {
    /// Serves the kind of the CRD `object` and returns it with the status of an accepted CRD.
    pub(super) fn install_crd(&self, mut object: Value) -> Result<Value, ApiError> {
        let crd = decode(&object)?;
        self.registry.install_crd(&crd)?;
        let names = serde_json::to_value(&crd.spec.names).unwrap_or(Value::Null);
        object["status"] = json!({
            "acceptedNames": names,
            "storedVersions": crd.spec.versions.iter().filter(|v| v.storage).map(|v| v.name.clone()).collect::<Vec<_>>(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
            ],
        });
        Ok(object)
    }

    /// Stops serving the kind of the deleted CRD `object`.
    pub(super) fn uninstall_crd(&self, object: &Value) {
        if let Ok(crd) = decode(object) {
            self.registry.remove_crd(&crd);
        }
    }
}
