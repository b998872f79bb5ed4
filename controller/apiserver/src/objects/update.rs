//! Update (PUT) and patch (merge, JSON and, for built-in kinds, strategic merge): each done
//! again on the new state when another write came first, unless the client named the
//! resourceVersion it expects.

use serde_json::Value;

use super::write::{Target, meta_str};
use super::{ApiState, PatchKind, WriteOptions, Written};
use crate::events;
use crate::patch;
use crate::registry::Resource;
use crate::schema::object_meta;
use crate::status::ApiError;

impl ApiState {
    /// Replaces an object (PUT), or its status (PUT `/status`). A write that loses a race
    /// with another is done again on the new state, unless the client named the
    /// resourceVersion it expects (then it gets the 409).
    pub fn update(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        status_only: bool,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        object_meta::check(&body)?;
        let named = meta_str(&body, "name").unwrap_or_default();
        if named != name {
            // As Kubernetes answers: a replacement names the object it replaces.
            return Err(ApiError::bad_request(format!(
                "the name of the object ({named}) does not match the name on the URL ({name})"
            )));
        }
        let explicit = meta_str(&body, "resourceVersion").is_some();
        let key = resource.key(namespace, name);
        self.retry_races(resource, &key, name, explicit, || {
            let current = self
                .store
                .get(&key)?
                .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
            let body = events::store_form(resource, body.clone());
            if let Some(expected) = meta_str(&body, "resourceVersion")
                && Some(expected) != meta_str(&current, "resourceVersion")
            {
                return Err(ApiError::conflict(&resource.group, &resource.plural, name));
            }
            let target = Target::new(resource, &key, name, status_only, options);
            self.write(target, current, body, false)
        })
    }

    /// Patches an object (or its status); done again on the new state when another write
    /// came first, unless the patch names the resourceVersion it expects.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status_only: bool,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let explicit = match body {
            Value::Array(operations) => operations
                .iter()
                .any(|op| op["path"] == "/metadata/resourceVersion"),
            _ => meta_str(body, "resourceVersion").is_some(),
        };
        let key = resource.key(namespace, name);
        self.retry_races(resource, &key, name, explicit, || {
            if kind == PatchKind::Strategic && resource.custom {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                ));
            }
            if kind == PatchKind::Apply {
                return self.apply(resource, namespace, name, body, status_only, options);
            }
            let Some(current) = self.store.get(&key)? else {
                return Err(ApiError::not_found(&resource.group, &resource.plural, name));
            };
            // Patches apply to the object as the client sees it (an events.k8s.io Event is
            // patched in that form), then go back to the stored form.
            let mut patched = events::present(resource, current.clone());
            match kind {
                PatchKind::Json => patch::json_patch(&mut patched, body)?,
                PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply => {
                    if !body.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    patch::merge_patch(&mut patched, body);
                }
            }
            if meta_str(&patched, "resourceVersion") != meta_str(&current, "resourceVersion")
                && meta_str(&patched, "resourceVersion").is_some()
            {
                return Err(ApiError::conflict(&resource.group, &resource.plural, name));
            }
            let patched = events::store_form(resource, patched);
            let target = Target::new(resource, &key, name, status_only, options);
            self.write(target, current, patched, false)
        })
    }
}
