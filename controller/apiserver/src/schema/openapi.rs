//! OpenAPI v3, built from the served kinds: what `kubectl apply` needs (each kind's PATCH
//! operation listing `fieldValidation`, so kubectl leaves validation to the server) and what
//! `kubectl explain` prints (the CRD schemas with their descriptions).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::registry::{Registry, Resource};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

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
        let list_name = format!("{name}List");
        schemas.insert(
            list_name.clone(),
            list_schema(&name, &resource.group, &resource.version, &resource.kind),
        );
        schemas.insert(name.clone(), schema);
        let base = format!("/{}", group_version_path(group, version));
        let collection = if resource.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
        } else {
            format!("{base}/{}", resource.plural)
        };
        // What a write to /status may carry: everything else in its body is ignored.
        let status_object = json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": component(OBJECT_META),
                "status": schemas.get(&name).and_then(|schema| schema["properties"].get("status")).cloned().unwrap_or_else(|| json!({"type": "object"})),
            },
        });
        let operations = Operations {
            gvk,
            object: component(&name),
            status_object,
            scope: if resource.namespaced {
                vec![path_parameter("namespace")]
            } else {
                Vec::new()
            },
        };
        let item_path = operations.item_path();
        let collection_path = operations.collection_path(
            component(&list_name),
            &resource.kind,
            resource.deletes_collections(),
        );
        if resource.status_subresource {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                operations.status_path(),
            );
        }
        if resource.scale.is_some() {
            schemas.insert(SCALE.to_owned(), scale_schema());
            paths.insert(
                format!("{collection}/{{name}}/scale"),
                operations.scale_path(),
            );
        }
        paths.insert(format!("{collection}/{{name}}"), item_path);
        paths.insert(collection, collection_path);
    }
    schemas.insert(STATUS.to_owned(), status_schema());
    json!({
        "openapi": "3.0.0",
        "info": {"title": "lxd-operator embedded API server", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn component(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string"}})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// The operations of one kind, as Kubernetes describes them: what each takes (its query
/// parameters and body) and what it answers, every failure a Status.
struct Operations {
    gvk: Value,
    object: Value,
    /// The body a write to `/status` is read for.
    status_object: Value,
    /// The path parameters of the collection (`namespace`, for a namespaced kind).
    scope: Vec<Value>,
}

impl Operations {
    fn operation(&self, verb: &str, parameters: &[&str], responses: Value) -> Value {
        let mut responses = responses;
        responses["default"] =
            json!({"description": "Failure", "content": json_content(component(STATUS))});
        let parameters: Vec<Value> = parameters.iter().map(|p| query_parameter(p)).collect();
        json!({"x-kubernetes-action": verb, "x-kubernetes-group-version-kind": self.gvk, "parameters": parameters, "responses": responses})
    }

    fn object_response(&self, codes: &[&str]) -> Value {
        let mut responses = Map::new();
        for code in codes {
            responses.insert(
                (*code).to_owned(),
                json!({"description": "OK", "content": json_content(self.object.clone())}),
            );
        }
        Value::Object(responses)
    }

    fn with_body(mut operation: Value, content: Value) -> Value {
        operation["requestBody"] = json!({"required": true, "content": content});
        operation
    }

    /// `…/{name}`: get, replace, patch, delete one object.
    fn item_path(&self) -> Value {
        let mut path = self.read_and_write_path(&self.object);
        // A delete answers the object while finalizers hold it, else a Status.
        let deleted = json!({"description": "OK", "content": json_content(json!({"anyOf": [self.object, component(STATUS)]}))});
        path["delete"] = self.operation(
            "delete",
            &["dryRun"],
            json!({"200": deleted, "202": deleted}),
        );
        path
    }

    /// `…/{name}/status`: get, replace and patch the status of one object.
    fn status_path(&self) -> Value {
        self.read_and_write_path(&self.status_object)
    }

    /// `…/{name}/scale`: get, replace and patch (not apply) the object's `autoscaling/v1`
    /// Scale, its operations tagged with the Scale's kind as Kubernetes tags them.
    fn scale_path(&self) -> Value {
        let scale = Operations {
            gvk: json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
            object: component(SCALE),
            status_object: component(SCALE),
            scope: self.scope.clone(),
        };
        let mut path = scale.read_and_write_path(&component(SCALE));
        let patch = &mut path["patch"];
        patch["requestBody"]["content"] = json!({
            "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
        });
        patch["parameters"] =
            json!(["dryRun", "fieldManager", "fieldValidation"].map(query_parameter));
        path
    }

    fn read_and_write_path(&self, body: &Value) -> Value {
        const WRITE: [&str; 3] = ["dryRun", "fieldManager", "fieldValidation"];
        let patch_body = json!({
            "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        });
        let mut parameters = self.scope.clone();
        parameters.push(path_parameter("name"));
        json!({
            "parameters": parameters,
            "get": self.operation("get", &[], self.object_response(&["200"])),
            "put": Self::with_body(
                self.operation("put", &WRITE, self.object_response(&["200", "201"])),
                json_content(body.clone()),
            ),
            "patch": Self::with_body(
                self.operation("patch", &["dryRun", "fieldManager", "fieldValidation", "force"], self.object_response(&["200", "201"])),
                patch_body,
            ),
        })
    }

    /// The collection: list (or watch), create, and delete all where the kind allows that.
    fn collection_path(&self, list: Value, kind: &str, deletes_collections: bool) -> Value {
        let mut list_operation = self.operation(
            "list",
            &[
                "labelSelector",
                "fieldSelector",
                "limit",
                "continue",
                "resourceVersion",
                "timeoutSeconds",
                "watch",
            ],
            json!({"200": {"description": "OK", "content": json_content(list.clone())}}),
        );
        list_operation["x-kubernetes-group-version-kind"]["kind"] = json!(format!("{kind}List"));
        let mut path = json!({
            "parameters": self.scope,
            "get": list_operation,
            "post": Self::with_body(
                self.operation("post", &["dryRun", "fieldManager", "fieldValidation"], self.object_response(&["200", "201", "202"])),
                json_content(self.object.clone()),
            ),
        });
        if deletes_collections {
            path["delete"] = self.operation(
                "deletecollection",
                &["dryRun", "labelSelector", "fieldSelector"],
                json!({"200": {"description": "OK", "content": json_content(list)}}),
            );
        }
        path
    }
}

fn list_schema(item: &str, group: &str, version: &str, kind: &str) -> Value {
    json!({
        "description": format!("A list of {kind}."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {
                "resourceVersion": {"type": "string"},
                "continue": {"type": "string"},
                "remainingItemCount": {"type": "integer", "format": "int64"},
            }},
            "items": {"type": "array", "items": component(item)},
        },
        "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": format!("{kind}List")}],
    })
}

/// `autoscaling/v1` `Scale`, as Kubernetes describes it, except that `status.replicas` is not
/// required: a write's status is ignored, so a body need not carry one (answers always do).
fn scale_schema() -> Value {
    json!({
        "description": "Scale represents a scaling request for a resource.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"description": "Standard object metadata.", "allOf": [component(OBJECT_META)]},
            "spec": {
                "description": "The desired state of the scale.",
                "type": "object",
                "properties": {"replicas": {"type": "integer", "format": "int32", "description": "The desired number of instances for the scaled object."}},
            },
            "status": {
                "description": "The current status of the scale.",
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer", "format": "int32", "description": "The actual number of observed instances of the scaled object."},
                    "selector": {"type": "string", "description": "The label query over the objects counted, as a string."},
                },
            },
        },
        "x-kubernetes-group-version-kind": [{"group": "autoscaling", "version": "v1", "kind": "Scale"}],
    })
}

fn status_schema() -> Value {
    json!({
        "description": "Status is a return value for calls that do not return other objects: every failure, and some deletes.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "status": {"type": "string", "description": "Success or Failure."},
            "message": {"type": "string", "description": "What went wrong, for people."},
            "reason": {"type": "string", "description": "What went wrong, for machines (NotFound, AlreadyExists, Invalid, …)."},
            "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "code": {"type": "integer", "format": "int32", "description": "The HTTP status code."},
        },
        "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}],
    })
}
