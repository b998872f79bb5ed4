//! Field ownership (`metadata.managedFields`) and server-side apply, after Kubernetes'
//! structured-merge-diff: every write records which field manager set which fields; an apply
//! merges the applied configuration into the object, refuses (409) to change fields another
//! manager owns unless forced, and removes the fields its manager stopped applying when no one
//! else owns them.
//!
//! Simplification, documented for users: lists are atomic (owned and replaced as a whole, as
//! `x-kubernetes-list-type: atomic`), so two managers cannot own different entries of one list.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value, json};

/// A field's path: the keys from the object's root. Lists are leaves.
pub type FieldPath = Vec<String>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `status` counts only when the kind has no status subresource.
    Main {
        /// Whether the kind has a status subresource.
        status_subresource: bool,
    },
    /// The `/status` subresource: `status` only.
    Status,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }

    fn includes(self, top_level: &str) -> bool {
        match (self, top_level) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, field) => field == "status",
            (Scope::Main { status_subresource }, "status") => !status_subresource,
            (Scope::Main { .. }, _) => true,
        }
    }
}

/// The metadata fields whose ownership is tracked (the others are the server's).
const MANAGED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// Every leaf field of `object` that a write in `scope` can own.
pub fn fields_of(object: &Value, scope: Scope) -> BTreeSet<FieldPath> {
    let mut fields = BTreeSet::new();
    let Some(map) = object.as_object() else {
        return fields;
    };
    for (key, value) in map {
        if !scope.includes(key) {
            continue;
        }
        if key == "metadata" {
            let Some(metadata) = value.as_object() else {
                continue;
            };
            for field in MANAGED_METADATA {
                if let Some(value) = metadata.get(*field) {
                    collect(
                        value,
                        &mut vec!["metadata".to_owned(), (*field).to_owned()],
                        &mut fields,
                    );
                }
            }
            continue;
        }
        collect(value, &mut vec![key.clone()], &mut fields);
    }
    fields
}

fn collect(value: &Value, path: &mut FieldPath, fields: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect(child, path, fields);
                path.pop();
            }
        }
        _ => {
            fields.insert(path.clone());
        }
    }
}

fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |value, key| value.as_object()?.get(key))
}

/// Whether one path is the other or lies under it.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Kubernetes' notation of a field path: `.spec.image`.
pub fn display_path(path: &[String]) -> String {
    path.iter().map(|key| format!(".{key}")).collect()
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the manager wrote with.
    pub api_version: String,
    /// When it last changed its fields.
    pub time: String,
    /// `""` or `"status"`.
    pub subresource: String,
    /// The fields it owns.
    pub fields: BTreeSet<FieldPath>,
}

impl ManagedEntry {
    fn is_apply(&self) -> bool {
        self.operation == "Apply"
    }

    fn owns_overlapping(&self, path: &[String]) -> impl Iterator<Item = &FieldPath> {
        self.fields
            .iter()
            .filter(move |owned| overlaps(owned, path))
    }
}

impl fmt::Display for ManagedEntry {
    /// As a conflict message names a manager: `"kubectl-edit" using v1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.manager)?;
        if !self.subresource.is_empty() {
            write!(f, " with subresource {:?}", self.subresource)?;
        }
        if !self.is_apply() {
            write!(f, " using {}", self.api_version)?;
        }
        Ok(())
    }
}

/// Reads `metadata.managedFields` (entries it cannot read are dropped).
pub fn read_entries(object: &Value) -> Vec<ManagedEntry> {
    let Some(entries) = object["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let mut fields = BTreeSet::new();
            decode_fields(&entry["fieldsV1"], &mut Vec::new(), &mut fields);
            Some(ManagedEntry {
                manager: entry["manager"].as_str()?.to_owned(),
                operation: entry["operation"].as_str().unwrap_or("Update").to_owned(),
                api_version: entry["apiVersion"].as_str().unwrap_or_default().to_owned(),
                time: entry["time"].as_str().unwrap_or_default().to_owned(),
                subresource: entry["subresource"].as_str().unwrap_or_default().to_owned(),
                fields,
            })
        })
        .collect()
}

/// `fieldsV1` to paths: `f:<name>` keys nest; a node without `f:` children is a leaf (list
/// entries `k:`/`v:`/`i:` of other servers make their list one atomic leaf here).
fn decode_fields(node: &Value, path: &mut FieldPath, fields: &mut BTreeSet<FieldPath>) {
    let Some(map) = node.as_object() else { return };
    let mut children = false;
    for (key, child) in map {
        if let Some(name) = key.strip_prefix("f:") {
            children = true;
            path.push(name.to_owned());
            decode_fields(child, path, fields);
            path.pop();
        }
    }
    if !children && !path.is_empty() {
        fields.insert(path.clone());
    }
}

fn encode_fields(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for key in path {
            let entry = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    Value::Object(root)
}

/// Writes `entries` as `metadata.managedFields` (removed when none are left).
pub fn write_entries(object: &mut Value, entries: &[ManagedEntry]) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let kept: Vec<Value> = entries
        .iter()
        .filter(|entry| !entry.fields.is_empty())
        .map(|entry| {
            let mut value = json!({
                "manager": entry.manager,
                "operation": entry.operation,
                "apiVersion": entry.api_version,
                "time": entry.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&entry.fields),
            });
            if !entry.subresource.is_empty() {
                value["subresource"] = json!(entry.subresource);
            }
            value
        })
        .collect();
    if kept.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".to_owned(), Value::Array(kept));
    }
}

/// Who writes, and when.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The API version of the request.
    pub api_version: &'a str,
    /// The part of the object written.
    pub scope: Scope,
    /// The time to record.
    pub time: &'a str,
}

impl Writer<'_> {
    fn entry(&self, operation: &str) -> ManagedEntry {
        ManagedEntry {
            manager: self.manager.to_owned(),
            operation: operation.to_owned(),
            api_version: self.api_version.to_owned(),
            time: self.time.to_owned(),
            subresource: self.scope.subresource().to_owned(),
            fields: BTreeSet::new(),
        }
    }

    fn is(&self, entry: &ManagedEntry, operation: &str) -> bool {
        entry.manager == self.manager
            && entry.operation == operation
            && entry.subresource == self.scope.subresource()
    }
}

/// The ownership after an ordinary write (create, update, patch) turned `old` into `new`: the
/// writer takes the fields it changed (an `Update` entry); fields that are gone are owned by no
/// one.
pub fn track_update(
    mut entries: Vec<ManagedEntry>,
    old: &Value,
    new: &Value,
    writer: Writer<'_>,
) -> Vec<ManagedEntry> {
    let changed: Vec<FieldPath> = fields_of(new, writer.scope)
        .into_iter()
        .filter(|path| value_at(old, path) != value_at(new, path))
        .collect();
    for entry in &mut entries {
        entry.fields.retain(|owned| {
            value_at(new, owned).is_some() && !changed.iter().any(|c| overlaps(c, owned))
        });
    }
    if !changed.is_empty() {
        let position = match entries.iter().position(|e| writer.is(e, "Update")) {
            Some(position) => position,
            None => {
                entries.push(writer.entry("Update"));
                entries.len() - 1
            }
        };
        let entry = &mut entries[position];
        entry.fields.extend(changed);
        entry.time = writer.time.to_owned();
        entry.api_version = writer.api_version.to_owned();
    }
    entries.retain(|entry| !entry.fields.is_empty());
    entries
}

/// A field another manager owns with another value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owner, as Kubernetes names it (`"kubectl-edit" using v1`).
    pub manager: String,
    /// The field, `.spec.image`.
    pub field: String,
    /// The same field as a path.
    pub path: FieldPath,
}

/// Where client-side `kubectl apply` keeps the configuration it last applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether every conflict is with a field client-side `kubectl apply` set, as its
/// last-applied annotation on `live` records. Then `kubectl apply --server-side` takes those
/// fields over without `--force-conflicts`, as Kubernetes' lastAppliedManager lets it: a user
/// moving from client-side to server-side apply is not asked to force.
pub fn only_client_side_applied(live: &Value, conflicts: &[Conflict], scope: Scope) -> bool {
    let Some(text) = live["metadata"]["annotations"][LAST_APPLIED].as_str() else {
        return false;
    };
    let Ok(last_applied) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let allowed = fields_of(&last_applied, scope);
    conflicts
        .iter()
        .all(|conflict| allowed.iter().any(|field| overlaps(field, &conflict.path)))
}

/// Applies `applied` (already pruned to the schema) by `writer` onto `live` (`None`: the
/// object does not exist yet). Returns the merged object and the new ownership, or the
/// conflicts when not forced.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    mut entries: Vec<ManagedEntry>,
    writer: Writer<'_>,
    force: bool,
) -> Result<(Value, Vec<ManagedEntry>), Vec<Conflict>> {
    let empty = json!({});
    let live_value = live.unwrap_or(&empty);
    let applied_fields = fields_of(applied, writer.scope);
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, FieldPath)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if writer.is(entry, "Apply") {
            continue;
        }
        for path in &applied_fields {
            for owned in entry.owns_overlapping(path) {
                let deeper = if owned.len() >= path.len() {
                    owned
                } else {
                    path
                };
                if value_at(applied, deeper) != value_at(live_value, deeper) {
                    conflicts.push(Conflict {
                        manager: entry.to_string(),
                        field: display_path(owned),
                        path: owned.clone(),
                    });
                    taken.push((index, owned.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort_by(|a, b| (&a.manager, &a.field).cmp(&(&b.manager, &b.field)));
        conflicts.dedup();
        return Err(conflicts);
    }
    for (index, owned) in taken {
        entries[index].fields.remove(&owned);
    }

    let mut merged = live_value.clone();
    merge(&mut merged, applied);

    let previous = entries
        .iter()
        .find(|e| writer.is(e, "Apply"))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for dropped in previous.difference(&applied_fields) {
        let owned_elsewhere = applied_fields.iter().any(|p| overlaps(p, dropped))
            || entries
                .iter()
                .filter(|e| !writer.is(e, "Apply"))
                .any(|e| e.owns_overlapping(dropped).next().is_some());
        if !owned_elsewhere {
            remove_path(&mut merged, dropped);
        }
    }

    entries.retain(|e| !writer.is(e, "Apply"));
    let mut own = writer.entry("Apply");
    own.fields = applied_fields;
    entries.push(own);
    entries.retain(|entry| !entry.fields.is_empty());
    Ok((merged, entries))
}

/// Merges an applied configuration: maps field by field, lists and scalars replaced.
fn merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(target), Value::Object(applied)) => {
            for (key, value) in applied {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value);
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// Removes a field, and the maps it leaves empty below the top level.
fn remove_path(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = &mut *object;
    for key in parents {
        match node.get_mut(key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
        if map.is_empty() && parents.len() > 1 {
            remove_path(object, parents);
        }
    }
}

/// The 409 message Kubernetes gives for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let count = conflicts.len();
    let detail = if let [only] = conflicts {
        format!("conflict with {}: {}", only.manager, only.field)
    } else {
        let mut lines = Vec::new();
        let mut last_manager = None;
        for conflict in conflicts {
            if last_manager != Some(&conflict.manager) {
                lines.push(format!("conflicts with {}:", conflict.manager));
                last_manager = Some(&conflict.manager);
            }
            lines.push(format!("- {}", conflict.field));
        }
        lines.join("\n")
    };
    format!(
        "Apply failed with {count} conflict{}: {detail}",
        if count == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_subresource: true,
    };

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "lxd-operator.dev/v1alpha1",
            scope: MAIN,
            time: "2026-01-01T00:00:00Z",
        }
    }

    fn container(image: &str) -> Value {
        json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"image": {"alias": image}, "profiles": ["default"]},
               "status": {"phase": "Running"}})
    }

    fn paths(entry: &ManagedEntry) -> Vec<String> {
        entry.fields.iter().map(|p| display_path(p)).collect()
    }

    #[test]
    fn fields_skip_server_owned_metadata_and_status_and_keep_lists_whole() {
        let fields: Vec<String> = fields_of(&container("busybox"), MAIN)
            .iter()
            .map(|p| display_path(p))
            .collect();
        assert_eq!(
            fields,
            [
                ".metadata.labels.app",
                ".spec.image.alias",
                ".spec.profiles"
            ]
        );
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let (_, entries) = apply(
            None,
            &container("busybox"),
            vec![],
            writer("kubectl"),
            false,
        )
        .unwrap();
        let mut object = container("busybox");
        write_entries(&mut object, &entries);
        assert_eq!(
            object["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:image": {"f:alias": {}}, "f:profiles": {}}})
        );
        assert_eq!(read_entries(&object), entries);
    }

    #[test]
    fn a_second_manager_changing_an_owned_field_conflicts_unless_forced() {
        let live = container("busybox");
        let (_, entries) = apply(None, &live, vec![], writer("kubectl"), false).unwrap();
        let change = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
                            "metadata": {"name": "web"}, "spec": {"image": {"alias": "alpine"}}});
        let conflicts = apply(
            Some(&live),
            &change,
            entries.clone(),
            writer("other"),
            false,
        )
        .unwrap_err();
        assert_eq!(
            conflict_message(&conflicts),
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.image.alias"
        );
        let (merged, entries) =
            apply(Some(&live), &change, entries, writer("other"), true).unwrap();
        assert_eq!(merged["spec"]["image"]["alias"], "alpine");
        assert_eq!(merged["spec"]["profiles"], json!(["default"]));
        let kubectl = entries.iter().find(|e| e.manager == "kubectl").unwrap();
        assert_eq!(paths(kubectl), [".metadata.labels.app", ".spec.profiles"]);
    }

    #[test]
    fn the_same_value_is_shared_without_conflict() {
        let live = container("busybox");
        let (_, entries) = apply(None, &live, vec![], writer("kubectl"), false).unwrap();
        let same = json!({"spec": {"image": {"alias": "busybox"}}});
        let (_, entries) = apply(Some(&live), &same, entries, writer("other"), false).unwrap();
        assert!(entries.iter().all(|e| e.fields.contains(&vec![
            "spec".to_owned(),
            "image".to_owned(),
            "alias".to_owned()
        ])));
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed_unless_owned_elsewhere() {
        let mut first = container("busybox");
        first["spec"]["config"] = json!({"user.a": "1", "user.b": "2"});
        let (live, entries) = apply(None, &first, vec![], writer("kubectl"), false).unwrap();
        // Another manager also sets user.b (an ordinary update).
        let entries = track_update(entries, &live, &live, writer("ctl"));
        let mut updated = live.clone();
        updated["spec"]["config"]["user.b"] = json!("3");
        let entries = track_update(entries, &live, &updated, writer("ctl"));
        let mut second = container("busybox");
        second["spec"]["profiles"] = json!(["default", "web"]);
        let (merged, _) =
            apply(Some(&updated), &second, entries, writer("kubectl"), false).unwrap();
        assert_eq!(merged["spec"]["config"], json!({"user.b": "3"}));
        assert_eq!(merged["spec"]["profiles"], json!(["default", "web"]));
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_from_their_owner() {
        let live = container("busybox");
        let (_, entries) = apply(None, &live, vec![], writer("kubectl"), false).unwrap();
        let mut edited = live.clone();
        edited["spec"]["image"]["alias"] = json!("alpine");
        let entries = track_update(entries, &live, &edited, writer("kubectl-edit"));
        let edit = entries
            .iter()
            .find(|e| e.manager == "kubectl-edit")
            .unwrap();
        assert_eq!(paths(edit), [".spec.image.alias"]);
        assert_eq!(edit.operation, "Update");
        let conflicts = apply(Some(&edited), &live, entries, writer("kubectl"), false).unwrap_err();
        assert_eq!(
            conflict_message(&conflicts),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using lxd-operator.dev/v1alpha1: .spec.image.alias"
        );
    }

    #[test]
    fn several_conflicts_are_listed_by_manager() {
        let conflicts = vec![
            Conflict {
                manager: "\"a\"".to_owned(),
                field: ".spec.x".to_owned(),
                path: vec!["spec".to_owned(), "x".to_owned()],
            },
            Conflict {
                manager: "\"a\"".to_owned(),
                field: ".spec.y".to_owned(),
                path: vec!["spec".to_owned(), "y".to_owned()],
            },
        ];
        assert_eq!(
            conflict_message(&conflicts),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.x\n- .spec.y"
        );
    }
}
