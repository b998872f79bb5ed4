//! What a structural schema does to a custom resource before it is validated, as the Kubernetes
//! API server does it: fields the schema does not declare are pruned (and reported, for
//! `fieldValidation`), nulls of non-nullable fields are dropped, and `default` values fill
//! what is missing.
//!
//! The skeleton that counts is the schema's own `properties`, `additionalProperties` and `items`
//! (a structural schema keeps them out of `allOf`/`anyOf`/`oneOf`), and
//! `x-kubernetes-preserve-unknown-fields` keeps a subtree as it is.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::{Map, Value};

/// The fields of `metadata` (ObjectMeta) an API server knows.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Removes every field of `object` that `schema` does not declare, and returns their paths
/// (`spec.foo`, `spec.devices[0].bar`), in document order. `apiVersion`, `kind` and the known
/// fields of `metadata` are always kept.
pub fn prune(schema: &JSONSchemaProps, object: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let Value::Object(map) = object else {
        return unknown;
    };
    if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
        metadata.retain(|key, _| {
            let known = OBJECT_META_FIELDS.contains(&key.as_str());
            if !known {
                unknown.push(format!("metadata.{key}"));
            }
            known
        });
    }
    prune_object(schema, map, "", true, &mut unknown);
    unknown
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves_unknown(schema: &JSONSchemaProps) -> bool {
    schema.x_kubernetes_preserve_unknown_fields == Some(true)
}

fn prune_value(schema: &JSONSchemaProps, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => prune_object(schema, map, path, false, unknown),
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
                for (index, item) in items.iter_mut().enumerate() {
                    prune_value(item_schema, item, &format!("{path}[{index}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    schema: &JSONSchemaProps,
    map: &mut Map<String, Value>,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
) {
    let preserve = preserves_unknown(schema);
    let additional = match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(additional)) => Some(additional.as_ref()),
        _ => None,
    };
    let allows_any = matches!(
        schema.additional_properties,
        Some(JSONSchemaPropsOrBool::Bool(true))
    );
    let mut removed = Vec::new();
    for (key, child) in map.iter_mut() {
        if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let child_path = child_path(path, key);
        let declared = schema.properties.as_ref().and_then(|p| p.get(key));
        match (declared, additional) {
            (Some(property), _) | (None, Some(property)) => {
                prune_value(property, child, &child_path, unknown);
            }
            (None, None) if preserve || allows_any => {}
            (None, None) => removed.push(key.clone()),
        }
    }
    for key in removed {
        map.remove(&key);
        unknown.push(child_path(path, &key));
    }
}

/// Drops nulls the schema does not allow (an API server treats them as absent) and fills in
/// `default` values of missing fields, recursively.
pub fn apply_defaults(schema: &JSONSchemaProps, object: &mut Value) {
    default_value(schema, object, true);
}

fn default_value(schema: &JSONSchemaProps, value: &mut Value, root: bool) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = &schema.properties {
                for (key, property) in properties {
                    if root && key == "metadata" {
                        continue;
                    }
                    if map.get(key).is_some_and(Value::is_null) && property.nullable != Some(true) {
                        map.remove(key);
                    }
                    if !map.contains_key(key)
                        && let Some(default) = &property.default
                    {
                        map.insert(key.clone(), default.0.clone());
                    }
                    if let Some(child) = map.get_mut(key) {
                        default_value(property, child, false);
                    }
                }
            }
            if let Some(JSONSchemaPropsOrBool::Schema(additional)) = &schema.additional_properties {
                let declared = schema.properties.as_ref();
                for (key, child) in map.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(key)) {
                        default_value(additional, child, false);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
                for item in items {
                    default_value(item_schema, item, false);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::validation::tests::{example_manifests, schema_of};

    #[test]
    fn unknown_fields_are_pruned_and_named() {
        let mut object = json!({
            "apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
            "metadata": {"name": "web", "labels": {"a": "b"}, "colour": "red"},
            "spec": {"clusterRef": {"name": "c", "port": 1}, "image": {"alias": "busybox"}, "typo": true,
                     "config": {"user.anything": "kept"}},
        });
        let unknown = prune(&schema_of("LxdContainer"), &mut object);
        assert_eq!(
            unknown,
            ["metadata.colour", "spec.clusterRef.port", "spec.typo"]
        );
        assert_eq!(object["spec"]["config"]["user.anything"], "kept");
        assert!(object["spec"].get("typo").is_none());
        assert_eq!(object["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn defaults_fill_missing_fields_and_non_nullable_nulls() {
        let schema: JSONSchemaProps = serde_json::from_value(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "state": {"type": "string", "default": "Running"},
                "replicas": {"type": "integer", "default": 1},
                "note": {"type": "string", "nullable": true, "default": "x"},
            }}},
        }))
        .unwrap();
        let mut object = json!({"spec": {"replicas": null, "note": null}});
        apply_defaults(&schema, &mut object);
        assert_eq!(
            object["spec"],
            json!({"state": "Running", "replicas": 1, "note": null})
        );
    }

    #[test]
    fn every_example_manifest_survives_pruning_unchanged() {
        for (path, kind, manifest) in example_manifests() {
            let mut pruned = manifest.clone();
            let unknown = prune(&schema_of(&kind), &mut pruned);
            assert!(unknown.is_empty(), "{}: {unknown:?}", path.display());
            assert_eq!(pruned, manifest);
        }
    }
}
