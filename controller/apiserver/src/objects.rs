//! What a write means, as a Kubernetes API server does it: metadata (uid, timestamps,
//! resourceVersion, generation), optimistic concurrency, the status subresource, finalizers,
//! garbage collection of dependents, schema validation, and writes that change nothing.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::events;
use super::managed_fields::{self, Scope, Writer};
use super::patch;
use super::registry::{Registry, Resource};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::storage::{ChangeKind, Precondition, StorageError, Store};
use super::structural;

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
    /// `application/apply-patch+yaml`: server-side apply.
    Apply,
}

/// What to do with fields the schema does not declare (`fieldValidation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (a `Warning` header); the server's default.
    #[default]
    Warn,
    /// Refuse the write (400).
    Strict,
}

impl FieldValidation {
    /// Reads the `fieldValidation` query parameter.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or_default() {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }
}

/// The options every write takes (its query parameters).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager` (or the client's user agent): who owns the fields written.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force`: a server-side apply takes fields other managers own.
    pub force: bool,
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("unknown")
    }
}

/// The answer to a write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored (or as it would be, in a dry run).
    pub object: Value,
    /// Warnings for the client (`Warning` headers).
    pub warnings: Vec<String>,
    /// Whether the write created the object (an apply of a missing object).
    pub created: bool,
}

impl Written {
    fn new(object: Value, warnings: Vec<String>) -> Self {
        Written {
            object,
            warnings,
            created: false,
        }
    }
}

/// The outcome of unknown fields under a `fieldValidation` policy: warnings, or the 400.
fn unknown_fields(unknown: &[String], policy: FieldValidation) -> Result<Vec<String>, ApiError> {
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
fn record_update(
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

fn scope_of(resource: &Resource, status_only: bool) -> Scope {
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
    // Compiled once: compiling costs more than the rest of a create.
    static COMPILED: std::sync::LazyLock<[Option<regex::Regex>; 2]> =
        std::sync::LazyLock::new(|| [DNS_LABEL, DNS_SUBDOMAIN].map(|p| regex::Regex::new(p).ok()));
    let compiled = &COMPILED[usize::from(pattern == DNS_SUBDOMAIN)];
    let valid = compiled.as_ref().is_some_and(|r| r.is_match(name));
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
    /// Prunes undeclared fields (reported under `policy`) and fills defaults, as a structural
    /// schema does before validation.
    fn normalize(
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

    /// Stores `object` at `key` with the change's revision as its resourceVersion.
    fn commit_with_revision(
        &self,
        key: &str,
        kind: ChangeKind,
        precondition: Precondition,
        mut object: Value,
    ) -> Result<Value, StorageError> {
        self.store.commit(key, kind, precondition, |revision| {
            object["metadata"]["resourceVersion"] = json!(revision.to_string());
            object
        })
    }

    fn namespace_exists(&self, namespace: &str) -> Result<bool, ApiError> {
        Ok(self.store.contains(&format!("/namespaces/-/{namespace}"))?)
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
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
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
        let warnings = self.normalize(resource, &mut object, options.field_validation)?;
        self.validate(resource, &object, &name)?;
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
        if resource.kind == "CustomResourceDefinition" {
            object = self.install_crd(object)?;
        }
        if options.dry_run {
            return Ok(Written::new(events::present(resource, object), warnings));
        }
        let stored = self
            .commit_with_revision(&key, ChangeKind::Added, Precondition::Absent, object)
            .map_err(|error| match error {
                // Another create of the same name came first.
                StorageError::Precondition { .. } => {
                    ApiError::already_exists(&resource.group, &resource.plural, &name)
                }
                other => other.into(),
            })?;
        Ok(Written::new(events::present(resource, stored), warnings))
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
            self.write(
                resource,
                &key,
                name,
                current,
                body,
                status_only,
                options,
                false,
            )
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
            self.write(
                resource,
                &key,
                name,
                current,
                patched,
                status_only,
                options,
                false,
            )
        })
    }

    /// Server-side apply: merges the applied configuration under its field manager's
    /// ownership, creating the object when it does not exist.
    fn apply(
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
                self.write(
                    resource,
                    &key,
                    name,
                    current,
                    merged,
                    status_only,
                    options,
                    true,
                )?
            }
        };
        warnings.append(&mut written.warnings);
        written.warnings = warnings;
        Ok(written)
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
        options: &WriteOptions,
        applied: bool,
    ) -> Result<Written, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let read_at = Precondition::Revision(revision_of(&current));
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
            let deleted = self.commit_with_revision(key, ChangeKind::Deleted, read_at, next)?;
            self.collect_dependents(&uid)?;
            return Ok(Written::new(events::present(resource, deleted), warnings));
        }
        if resource.kind == "CustomResourceDefinition" && !status_only {
            next = self.install_crd(next)?;
        }
        let stored = self.commit_with_revision(key, ChangeKind::Modified, read_at, next)?;
        Ok(Written::new(events::present(resource, stored), warnings))
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
        self.retry_races(resource, &key, name, false, || {
            self.delete_at(resource, &key, name, dry_run)
        })
    }

    /// One attempt of [`ApiState::delete`] on the object stored at `key`.
    fn delete_at(
        &self,
        resource: &Resource,
        key: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<(u16, Value), ApiError> {
        let mut current = self
            .store
            .get(key)?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
        let read_at = Precondition::Revision(revision_of(&current));
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
            let stored = self.commit_with_revision(key, ChangeKind::Modified, read_at, current)?;
            return Ok((202, events::present(resource, stored)));
        }
        let uid = meta_str(&current, "uid").unwrap_or_default().to_owned();
        let deleted = self
            .store
            .commit(key, ChangeKind::Deleted, read_at, |_| current)?;
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

/// The resourceVersion of an object as stored.
fn revision_of(object: &Value) -> i64 {
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
    fn retry_races<T>(
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
