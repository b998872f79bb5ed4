//! What a write means, as a Kubernetes API server does it: metadata (uid, timestamps,
//! resourceVersion, generation), optimistic concurrency, the status subresource, finalizers,
//! garbage collection of dependents, schema validation, and writes that change nothing.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::events;
use super::patch;
use super::registry::{Registry, Resource};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::storage::{ChangeKind, Store};

/// The API's state: the store and the kinds it serves.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Objects and their history.
    pub store: Store,
    /// Served kinds.
    pub registry: Registry,
}

/// How a list is narrowed.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply; applied as a merge for now).
    Apply,
}

/// RFC 3339 now, in seconds, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

fn name_error(resource: &Resource, name: &str) -> Option<String> {
    let (pattern, max, rule) = if resource.kind == "Namespace" {
        (
            DNS_LABEL,
            63,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        )
    } else {
        (
            DNS_SUBDOMAIN,
            253,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        )
    };
    let valid = regex::Regex::new(pattern).is_ok_and(|r| r.is_match(name));
    if name.len() > max {
        Some(format!("must be no more than {max} characters"))
    } else if !valid {
        Some(rule.to_owned())
    } else {
        None
    }
}

fn invalid_name(resource: &Resource, name: &str, rule: String) -> ApiError {
    let error = super::validation::FieldError {
        field: "metadata.name".to_owned(),
        kind: super::validation::FieldErrorKind::Invalid,
        message: format!("Invalid value: \"{name}\": {rule}"),
    };
    ApiError::invalid(&resource.group, &resource.kind, name, &[error])
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object["metadata"][field].as_str()
}

/// The parts of an object that count as its spec (for `generation`): all but metadata and
/// status.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    copy
}

/// An object without the fields a no-op write may differ in.
fn comparable(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    copy
}

impl ApiState {
    fn namespace_exists(&self, namespace: &str) -> Result<bool, ApiError> {
        Ok(self
            .store
            .get(&format!("/namespaces/-/{namespace}"))?
            .is_some())
    }

    fn validate(&self, resource: &Resource, object: &Value, name: &str) -> Result<(), ApiError> {
        if let Some(validator) = &resource.validator {
            let errors = validator.validate(object);
            if !errors.is_empty() {
                return Err(ApiError::invalid(
                    &resource.group,
                    &resource.kind,
                    name,
                    &errors,
                ));
            }
        }
        if resource.kind == "CustomResourceDefinition" {
            let crd: CustomResourceDefinition =
                serde_json::from_value(object.clone()).map_err(|e| {
                    ApiError::bad_request(format!("invalid CustomResourceDefinition: {e}"))
                })?;
            let expected = format!("{}.{}", crd.spec.names.plural, crd.spec.group);
            if crd.metadata.name.as_deref() != Some(expected.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "metadata.name must be spec.names.plural+\".\"+spec.group: {expected}"
                )));
            }
        }
        Ok(())
    }

    /// Reads one object.
    pub fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let object = self
            .store
            .get(&resource.key(namespace, name))?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
        Ok(events::present(resource, object))
    }

    /// Lists objects, filtered and paged, with the revision they were read at.
    pub fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
        let (objects, revision) = self.store.list(&resource.prefix(namespace))?;
        let after = options
            .continue_token
            .as_deref()
            .map(decode_continue)
            .transpose()?;
        let mut items = Vec::new();
        let mut next = None;
        for object in objects {
            let key = resource.key(
                meta_str(&object, "namespace"),
                meta_str(&object, "name").unwrap_or_default(),
            );
            if after.as_deref().is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            let object = events::present(resource, object);
            if !(options.labels.matches(&object) && options.fields.matches(&object)) {
                continue;
            }
            if options.limit > 0 && items.len() == options.limit {
                next = Some(encode_continue(&last_key(resource, &items)));
                break;
            }
            items.push(object);
        }
        Ok((items, revision, next))
    }

    /// Creates an object.
    pub fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        object = events::store_form(resource, object);
        object["apiVersion"] = json!(if resource.kind == "Event" {
            "v1".to_owned()
        } else {
            resource.api_version()
        });
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
                let error = super::validation::FieldError {
                    field: "metadata.name".to_owned(),
                    kind: super::validation::FieldErrorKind::Required,
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
        if let Some(rule) = name_error(resource, &name) {
            return Err(invalid_name(resource, &name, rule));
        }
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
        if resource.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        self.validate(resource, &object, &name)?;
        let key = resource.key(namespace.as_deref(), &name);
        if self.store.get(&key)?.is_some() {
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
        if resource.kind == "CustomResourceDefinition" {
            object = self.install_crd(object)?;
        }
        if dry_run {
            return Ok(events::present(resource, object));
        }
        let stored = self.store.commit(&key, ChangeKind::Added, |revision| {
            object["metadata"]["resourceVersion"] = json!(revision.to_string());
            object
        })?;
        Ok(events::present(resource, stored))
    }

    fn install_crd(&self, mut object: Value) -> Result<Value, ApiError> {
        let crd: CustomResourceDefinition = serde_json::from_value(object.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid CustomResourceDefinition: {e}")))?;
        self.registry
            .install_crd(&crd)
            .map_err(ApiError::bad_request)?;
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

    /// Replaces an object (PUT), or its status (PUT `/status`).
    pub fn update(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        status_only: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = resource.key(namespace, name);
        let current = self
            .store
            .get(&key)?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
        let body = events::store_form(resource, body);
        if let Some(expected) = meta_str(&body, "resourceVersion")
            && Some(expected) != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(&resource.group, &resource.plural, name));
        }
        self.write(resource, &key, name, current, body, status_only, dry_run)
    }

    /// Patches an object (or its status).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status_only: bool,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        if kind == PatchKind::Strategic && resource.custom {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        let key = resource.key(namespace, name);
        let Some(current) = self.store.get(&key)? else {
            if kind == PatchKind::Apply {
                return self
                    .create(resource, namespace, body.clone(), dry_run)
                    .map(|created| (created, true));
            }
            return Err(ApiError::not_found(&resource.group, &resource.plural, name));
        };
        // Patches apply to the object as the client sees it (an events.k8s.io Event is
        // patched in that form), then go back to the stored form.
        let mut patched = events::present(resource, current.clone());
        match kind {
            PatchKind::Json => patch::json_patch(&mut patched, body).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: e,
                details: None,
            })?,
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
        self.write(resource, &key, name, current, patched, status_only, dry_run)
            .map(|object| (object, false))
    }

    /// The common end of update and patch.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        resource: &Resource,
        key: &str,
        name: &str,
        current: Value,
        body: Value,
        status_only: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let mut next = if status_only {
            let mut next = current.clone();
            next["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            next
        } else {
            let mut next = body;
            if resource.status_subresource {
                match current.get("status") {
                    Some(status) => next["status"] = status.clone(),
                    None => {
                        if let Some(map) = next.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            // Fields the server owns.
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match current["metadata"].get(field) {
                    Some(value) => next["metadata"][field] = value.clone(),
                    None => {
                        if let Some(metadata) = next["metadata"].as_object_mut() {
                            metadata.remove(field);
                        }
                    }
                }
            }
            next
        };
        next["apiVersion"] = current["apiVersion"].clone();
        next["kind"] = current["kind"].clone();
        if next.get("status").is_some_and(Value::is_null)
            && let Some(map) = next.as_object_mut()
        {
            map.remove("status");
        }
        if resource.custom && spec_part(&next) != spec_part(&current) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        self.validate(resource, &next, name)?;
        // A write that changes nothing bumps nothing and wakes no watcher.
        if comparable(&next) == comparable(&current) {
            return Ok(events::present(resource, current));
        }
        let finalizers_done = next["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if dry_run {
            return Ok(events::present(resource, next));
        }
        if next["metadata"].get("deletionTimestamp").is_some() && finalizers_done {
            // The last finalizer is gone: the object goes.
            let uid = meta_str(&current, "uid").unwrap_or_default().to_owned();
            let deleted = self.store.commit(key, ChangeKind::Deleted, |revision| {
                next["metadata"]["resourceVersion"] = json!(revision.to_string());
                next
            })?;
            self.collect_dependents(&uid)?;
            return Ok(events::present(resource, deleted));
        }
        if resource.kind == "CustomResourceDefinition" && !status_only {
            next = self.install_crd(next)?;
        }
        let stored = self.store.commit(key, ChangeKind::Modified, |revision| {
            next["metadata"]["resourceVersion"] = json!(revision.to_string());
            next
        })?;
        Ok(events::present(resource, stored))
    }

    /// Deletes an object: at once, or (with finalizers) by marking it; 202 while it waits.
    pub fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<(u16, Value), ApiError> {
        let key = resource.key(namespace, name);
        let mut current = self
            .store
            .get(&key)?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
        let has_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if dry_run {
            return Ok((200, events::present(resource, current)));
        }
        if has_finalizers {
            if current["metadata"].get("deletionTimestamp").is_some() {
                return Ok((202, events::present(resource, current)));
            }
            current["metadata"]["deletionTimestamp"] = json!(now());
            current["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if resource.custom {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                current["metadata"]["generation"] = json!(generation + 1);
            }
            let stored = self.store.commit(&key, ChangeKind::Modified, |revision| {
                current["metadata"]["resourceVersion"] = json!(revision.to_string());
                current
            })?;
            return Ok((202, events::present(resource, stored)));
        }
        let uid = meta_str(&current, "uid").unwrap_or_default().to_owned();
        let deleted = self.store.commit(&key, ChangeKind::Deleted, |_| current)?;
        if resource.kind == "CustomResourceDefinition"
            && let Ok(crd) = serde_json::from_value::<CustomResourceDefinition>(deleted.clone())
        {
            self.registry.remove_crd(&crd);
        }
        if resource.kind == "Namespace" {
            self.delete_namespace_contents(name)?;
        }
        self.collect_dependents(&uid)?;
        Ok((200, events::present(resource, deleted)))
    }

    fn delete_namespace_contents(&self, namespace: &str) -> Result<(), ApiError> {
        for resource in self.registry.all().into_iter().filter(|r| r.namespaced) {
            let (objects, _) = self.store.list(&resource.prefix(Some(namespace)))?;
            for object in objects {
                let name = meta_str(&object, "name").unwrap_or_default().to_owned();
                // Ignore errors of objects already gone (two versions share Events).
                let _ = self.delete(&resource, Some(namespace), &name, false);
            }
        }
        Ok(())
    }

    /// Background garbage collection: objects owned by `uid` are deleted (through their own
    /// finalizers, if any).
    fn collect_dependents(&self, uid: &str) -> Result<(), ApiError> {
        if uid.is_empty() {
            return Ok(());
        }
        for resource in self.registry.all() {
            let (objects, _) = self.store.list(&resource.prefix(None))?;
            for object in objects {
                let owned = object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|owners| owners.iter().any(|o| o["uid"] == uid));
                if owned {
                    let name = meta_str(&object, "name").unwrap_or_default().to_owned();
                    let _ = self.delete(&resource, meta_str(&object, "namespace"), &name, false);
                }
            }
        }
        Ok(())
    }
}

fn last_key(resource: &Resource, items: &[Value]) -> String {
    items
        .last()
        .map(|o| {
            resource.key(
                meta_str(o, "namespace"),
                meta_str(o, "name").unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

fn encode_continue(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_continue(token: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}
