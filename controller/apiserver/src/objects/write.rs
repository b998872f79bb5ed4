//! What every write shares: the server's own metadata, pruning, defaults and validation, the
//! common end of update, patch and apply (status subresource, generation, no-op writes,
//! finalizers done), and retries of writes that lost a race.

use serde_json::{Value, json};

use super::{ApiState, FieldValidation, WriteOptions, Written};
use crate::events;
use crate::managed_fields::{self, Scope, Writer};
use crate::registry::{Resource, Role};
use crate::schema::{object_meta, structural};
use crate::status::ApiError;
use crate::storage::DeletedVersion;

/// The outcome of unknown fields under a `fieldValidation` policy: warnings, or the 400.
pub(super) fn unknown_fields(
    unknown: &[String],
    policy: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if unknown.is_empty() || policy == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let messages: Vec<String> = unknown
        .iter()
        .map(|field| format!("unknown field \"{field}\""))
        .collect();
    if policy == FieldValidation::Strict {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        )));
    }
    Ok(messages)
}

/// Records in `new`'s managedFields what an ordinary write (not an apply) changed from `old`
/// (`Null` for a create), as the write's field manager's.
pub(super) fn record_update(
    resource: &Resource,
    options: &WriteOptions,
    status_only: bool,
    old: &Value,
    new: &mut Value,
) {
    let api_version = resource.api_version();
    let time = now();
    let writer = Writer {
        manager: options.manager(),
        api_version: &api_version,
        scope: scope_of(resource, status_only),
        time: &time,
    };
    let entries = managed_fields::track_update(managed_fields::read_entries(old), old, new, writer);
    managed_fields::write_entries(new, &entries);
}

pub(super) fn scope_of(resource: &Resource, status_only: bool) -> Scope {
    if status_only {
        Scope::Status
    } else {
        Scope::Main {
            status_subresource: resource.status_subresource,
        }
    }
}

/// RFC 3339 now, in seconds, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
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

/// The object an update, patch or apply is addressed to, and how.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) resource: &'a Resource,
    /// Its storage key.
    pub(super) key: &'a str,
    pub(super) name: &'a str,
    /// Whether the write is to `/status`.
    pub(super) status_only: bool,
    pub(super) options: &'a WriteOptions,
}

impl<'a> Target<'a> {
    pub(super) fn new(
        resource: &'a Resource,
        key: &'a str,
        name: &'a str,
        status_only: bool,
        options: &'a WriteOptions,
    ) -> Self {
        Target {
            resource,
            key,
            name,
            status_only,
            options,
        }
    }
}

impl ApiState {
    /// Prunes undeclared fields (reported under `policy`) and fills defaults, as a structural
    /// schema does before validation.
    pub(super) fn normalize(
        &self,
        resource: &Resource,
        object: &mut Value,
        policy: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let Some(schema) = &resource.schema else {
            return Ok(Vec::new());
        };
        let unknown = structural::prune(schema, object);
        let warnings = unknown_fields(&unknown, policy)?;
        structural::apply_defaults(schema, object);
        Ok(warnings)
    }

    pub(super) fn validate(
        &self,
        resource: &Resource,
        object: &Value,
        name: &str,
    ) -> Result<(), ApiError> {
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
        if resource.role == Role::Definition {
            super::crd::check_name(object)?;
        }
        Ok(())
    }

    /// The common end of update, patch and apply: `body` replaces `current` (its status only,
    /// through `/status`). With `applied`, `body` carries the ownership an apply computed.
    pub(super) fn write(
        &self,
        target: Target<'_>,
        current: Value,
        body: Value,
        applied: bool,
    ) -> Result<Written, ApiError> {
        let Target {
            resource,
            key,
            name,
            status_only,
            options,
        } = target;
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        object_meta::check(&body)?;
        let read_at = revision_of(&current);
        let mut next = if status_only {
            let mut next = current.clone();
            next["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            if applied && let Some(metadata) = next["metadata"].as_object_mut() {
                // An apply to /status carries the new ownership in its metadata.
                match body["metadata"].get("managedFields") {
                    Some(entries) => metadata.insert("managedFields".to_owned(), entries.clone()),
                    None => metadata.remove("managedFields"),
                };
            }
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
        let warnings = self.normalize(resource, &mut next, options.field_validation)?;
        // An apply has computed the ownership already. A client that sets managedFields
        // (kubectl moving an object to server-side apply) gets them as given, an empty list
        // clearing them; any other write owns what it changed.
        if !applied {
            let given = next["metadata"].get("managedFields");
            if given.is_none() || given == current["metadata"].get("managedFields") {
                record_update(resource, options, status_only, &current, &mut next);
            } else if given.and_then(Value::as_array).is_some_and(Vec::is_empty)
                && let Some(metadata) = next["metadata"].as_object_mut()
            {
                metadata.remove("managedFields");
            }
        }
        if resource.custom && spec_part(&next) != spec_part(&current) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        self.validate(resource, &next, name)?;
        let _admitted = if !status_only && spec_part(&next) != spec_part(&current) {
            self.admit(resource, &next, Some(&current), name)?
        } else {
            None
        };
        // A write that changes nothing bumps nothing and wakes no watcher.
        if comparable(&next) == comparable(&current) {
            return Ok(Written::new(events::present(resource, current), warnings));
        }
        let finalizers_done = next["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if options.dry_run {
            return Ok(Written::new(events::present(resource, next), warnings));
        }
        if next["metadata"].get("deletionTimestamp").is_some() && finalizers_done {
            // The last finalizer is gone: the object goes.
            let uid = meta_str(&current, "uid").unwrap_or_default().to_owned();
            let deleted = self
                .store
                .delete(key, read_at, next, DeletedVersion::OfDelete)?;
            self.collect_dependents(&uid)?;
            return Ok(Written::new(events::present(resource, deleted), warnings));
        }
        if resource.role == Role::Definition && !status_only {
            next = self.install_crd(next)?;
        }
        let stored = self.store.update(key, read_at, next)?;
        Ok(Written::new(events::present(resource, stored), warnings))
    }
}

/// The resourceVersion of an object as stored.
pub(super) fn revision_of(object: &Value) -> i64 {
    meta_str(object, "resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// How often a write that lost a race is done again before the client gets the 409.
const RACE_RETRIES: usize = 16;

impl ApiState {
    /// Runs `write` again while it loses races with other writes to the object at `key` (as
    /// the Kubernetes API server retries an update without a precondition), each time once
    /// the winning write can be read. With `explicit`, the client's own resourceVersion was
    /// the precondition: the 409 is its answer.
    pub(super) fn retry_races<T>(
        &self,
        resource: &Resource,
        key: &str,
        name: &str,
        explicit: bool,
        mut write: impl FnMut() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut attempts = 0;
        loop {
            match write() {
                Err(error) if error.is_race() => {
                    attempts += 1;
                    if explicit || attempts >= RACE_RETRIES {
                        return Err(ApiError::conflict(&resource.group, &resource.plural, name));
                    }
                    self.store.settle(key)?;
                }
                other => return other,
            }
        }
    }
}
