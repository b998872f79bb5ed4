//! Create: the name (given or generated) and its rules, the namespace, and the metadata a new
//! object gets.

use serde_json::{Value, json};

use super::write::{meta_str, now, record_update};
use super::{ApiState, WriteOptions, Written};
use crate::events;
use crate::registry::{Resource, Role};
use crate::schema::{object_meta, validation};
use crate::status::ApiError;
use crate::storage::StorageError;

impl ApiState {
    fn namespace_exists(&self, namespace: &str) -> Result<bool, ApiError> {
        Ok(self.store.contains(&format!("/namespaces/-/{namespace}"))?)
    }

    /// Creates an object.
    pub fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        object_meta::check(&object)?;
        object = events::store_form(resource, object);
        object["apiVersion"] = json!(resource.stored_api_version());
        object["kind"] = json!(resource.kind);
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(prefix)) if !prefix.is_empty() => format!(
                "{prefix}{}",
                &uuid::Uuid::new_v4().simple().to_string()[..5]
            ),
            _ => {
                let error = validation::FieldError {
                    field: "metadata.name".to_owned(),
                    kind: validation::FieldErrorKind::Required,
                    message: "Required value: name or generateName is required".to_owned(),
                };
                return Err(ApiError::invalid(
                    &resource.group,
                    &resource.kind,
                    "",
                    &[error],
                ));
            }
        };
        resource
            .name_rule()
            .check(&name)
            .map_err(|error| ApiError::invalid(&resource.group, &resource.kind, &name, &[error]))?;
        let namespace = if resource.namespaced {
            let namespace = namespace
                .or(meta_str(&object, "namespace"))
                .unwrap_or("default")
                .to_owned();
            if meta_str(&object, "namespace").is_some_and(|n| n != namespace) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if !self.namespace_exists(&namespace)? {
                return Err(ApiError::not_found("", "namespaces", &namespace));
            }
            object["metadata"]["namespace"] = json!(namespace);
            Some(namespace)
        } else {
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.remove("namespace");
            }
            None
        };
        object["metadata"]["name"] = json!(name);
        if !resource.keeps_status_on_create()
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        let warnings = self.normalize(resource, &mut object, options.field_validation)?;
        self.validate(resource, &object, &name)?;
        let _admitted = self.admit(resource, &object, None, &name)?;
        let key = resource.key(namespace.as_deref(), &name);
        if self.store.contains(&key)? {
            return Err(ApiError::already_exists(
                &resource.group,
                &resource.plural,
                &name,
            ));
        }
        let metadata = &mut object["metadata"];
        metadata["uid"] = json!(uuid::Uuid::new_v4().to_string());
        metadata["creationTimestamp"] = json!(now());
        if resource.custom {
            metadata["generation"] = json!(1);
        }
        if let Some(map) = metadata.as_object_mut() {
            map.remove("deletionTimestamp");
            map.remove("resourceVersion");
        }
        if object["metadata"].get("managedFields").is_none() {
            record_update(resource, options, false, &Value::Null, &mut object);
        }
        if resource.role == Role::Definition {
            object = self.install_crd(object)?;
        }
        if options.dry_run {
            return Ok(Written::new(events::present(resource, object), warnings));
        }
        let stored = self
            .store
            .create(&key, object)
            .map_err(|error| match error {
                // Another create of the same name came first.
                StorageError::Precondition { .. } => {
                    ApiError::already_exists(&resource.group, &resource.plural, &name)
                }
                other => other.into(),
            })?;
        Ok(Written::new(events::present(resource, stored), warnings))
    }
}
