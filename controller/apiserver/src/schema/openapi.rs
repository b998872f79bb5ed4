//! OpenAPI v3, built from the served kinds: what `kubectl apply` needs (each kind's PATCH
//! operation listing `fieldValidation`, so kubectl leaves validation to the server) and what
//! `kubectl explain` prints (the CRD schemas with their descriptions).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::registry::{Registry, Resource};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group-version, with a hash that changes with the schemas
/// (kubectl caches documents by URL).
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in registry.groups() {
        for version in versions {
            let path = group_version_path(&group, &version);
            let hash = hex::encode(
                &Sha256::digest(document(registry, &group, &version).to_string().as_bytes())[..8],
            );
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

fn schema_name(resource: &Resource) -> String {
    let group: Vec<&str> = if resource.group.is_empty() {
        vec!["io", "k8s", "api", "core"]
    } else {
        resource.group.split('.').rev().collect()
    };
    format!("{}.{}.{}", group.join("."), resource.version, resource.kind)
}

/// The document of one group-version.
pub fn document(registry: &Registry, group: &str, version: &str) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert(
        OBJECT_META.to_owned(),
        json!({
            "description": "Standard object metadata: name, namespace, labels, annotations, and what the server maintains.",
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Name, unique within a namespace."},
                "namespace": {"type": "string", "description": "Namespace of a namespaced object."},
                "generateName": {"type": "string", "description": "Prefix of a name the server generates."},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Labels, for selectors."},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations."},
                "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted."},
                "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Objects this one depends on."},
                "uid": {"type": "string", "description": "Unique id, set by the server."},
                "resourceVersion": {"type": "string", "description": "Version, for optimistic concurrency."},
                "generation": {"type": "integer", "format": "int64", "description": "Version of the desired state."},
                "creationTimestamp": {"type": "string", "format": "date-time", "description": "When it was created."},
                "deletionTimestamp": {"type": "string", "format": "date-time", "description": "When deletion was requested."},
            },
        }),
    );
    for resource in registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk =
            json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
        let mut schema = match &resource.schema {
            Some(schema) => {
                serde_json::to_value(schema.as_ref()).unwrap_or_else(|_| json!({"type": "object"}))
            }
            None => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        };
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        if schema["properties"].is_object() {
            schema["properties"]["metadata"] = json!({"description": "Standard object metadata.", "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}]});
        }
        let name = schema_name(&resource);
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        schemas.insert(name, schema);
        let base = format!("/{}", group_version_path(group, version));
        let collection = if resource.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
        } else {
            format!("{base}/{}", resource.plural)
        };
        let response = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let operation = |verb: &str, parameters: Vec<Value>| json!({"x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk, "parameters": parameters, "responses": response});
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation("get", vec![]),
                "put": operation("put", vec![query("dryRun"), query("fieldManager"), query("fieldValidation")]),
                "patch": operation("patch", vec![query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")]),
                "delete": operation("delete", vec![query("dryRun")]),
            }),
        );
        paths.insert(
            collection,
            json!({
                "get": operation("list", vec![query("labelSelector"), query("fieldSelector"), query("limit"), query("continue"), query("watch")]),
                "post": operation("post", vec![query("dryRun"), query("fieldManager"), query("fieldValidation")]),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "lxd-operator embedded API server", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
