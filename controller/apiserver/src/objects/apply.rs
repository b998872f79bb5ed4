//! Server-side apply: the applied configuration merged under its field manager's ownership,
//! creating the object when it is missing; `kubectl` moving from client-side apply takes over
//! the fields it set before.

use serde_json::{Value, json};

use super::write::{Target, meta_str, now, scope_of, unknown_fields};
use super::{ApiState, WriteOptions, Written};
use crate::events;
use crate::managed_fields::{self, Writer};
use crate::registry::Resource;
use crate::schema::{object_meta, structural};
use crate::status::ApiError;

impl ApiState {
    /// Server-side apply: merges the applied configuration under its field manager's
    /// ownership, creating the object when it does not exist.
    pub(super) fn apply(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        body: &Value,
        status_only: bool,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let Some(manager) = options.field_manager.as_deref().filter(|m| !m.is_empty()) else {
            return Err(ApiError::bad_request(
                "fieldManager is required for apply requests",
            ));
        };
        object_meta::check(body)?;
        let mut applied = body.clone();
        let Some(map) = applied.as_object_mut() else {
            return Err(ApiError::bad_request(
                "an applied configuration must be an object",
            ));
        };
        for field in ["apiVersion", "kind"] {
            if map
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "{field} must be set in an applied configuration"
                )));
            }
        }
        if meta_str(&applied, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        if let Some(metadata) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        let mut warnings = Vec::new();
        if let Some(schema) = &resource.schema {
            let unknown = structural::prune(schema, &mut applied);
            warnings = unknown_fields(&unknown, options.field_validation)?;
        }
        let key = resource.key(namespace, name);
        let current = self.store.get(&key)?;
        if current.is_none() && status_only {
            return Err(ApiError::not_found(&resource.group, &resource.plural, name));
        }
        let live = current.map(|c| events::present(resource, c));
        let entries = live
            .as_ref()
            .map(managed_fields::read_entries)
            .unwrap_or_default();
        let api_version = resource.api_version();
        let time = now();
        let writer = Writer {
            manager,
            api_version: &api_version,
            scope: scope_of(resource, status_only),
            time: &time,
        };
        let conflict = |conflicts: Vec<managed_fields::Conflict>| {
            ApiError::apply_conflict(&resource.group, &resource.plural, name, &conflicts)
        };
        // `kubectl apply --server-side` after client-side applies takes over what those set.
        let upgrading = manager == "kubectl";
        let (mut merged, entries) = match managed_fields::apply(
            live.as_ref(),
            &applied,
            entries.clone(),
            writer,
            options.force,
        ) {
            Ok(done) => done,
            Err(conflicts)
                if upgrading
                    && live.as_ref().is_some_and(|live| {
                        managed_fields::only_client_side_applied(live, &conflicts, writer.scope)
                    }) =>
            {
                managed_fields::apply(live.as_ref(), &applied, entries, writer, true)
                    .map_err(conflict)?
            }
            Err(conflicts) => return Err(conflict(conflicts)),
        };
        // And keeps the last-applied annotation in step, so that a client-side apply later
        // compares with what was applied last.
        let had_last_applied = live.as_ref().is_some_and(|live| {
            live["metadata"]["annotations"]
                .get(managed_fields::LAST_APPLIED)
                .is_some()
        });
        if upgrading && had_last_applied {
            let mut last_applied = applied.clone();
            if let Some(annotations) = last_applied
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
                .and_then(Value::as_object_mut)
            {
                annotations.remove(managed_fields::LAST_APPLIED);
            }
            merged["metadata"]["annotations"][managed_fields::LAST_APPLIED] =
                json!(last_applied.to_string());
        }
        if !merged["metadata"].is_object() {
            merged["metadata"] = json!({});
        }
        merged["metadata"]["name"] = json!(name);
        managed_fields::write_entries(&mut merged, &entries);
        let merged = events::store_form(resource, merged);
        let mut written = match live {
            None => {
                let mut created = self.create(resource, namespace, merged, options)?;
                created.created = true;
                created
            }
            Some(live) => {
                if meta_str(&merged, "resourceVersion") != meta_str(&live, "resourceVersion") {
                    return Err(ApiError::conflict(&resource.group, &resource.plural, name));
                }
                let current = events::store_form(resource, live);
                let target = Target::new(resource, &key, name, status_only, options);
                self.write(target, current, merged, true)?
            }
        };
        warnings.append(&mut written.warnings);
        written.warnings = warnings;
        Ok(written)
    }
}
