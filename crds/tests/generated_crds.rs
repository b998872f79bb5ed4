//! The checked-in CRD YAML is exactly what the types generate, and every CRD is one the
//! Kubernetes API server accepts: it parses as a `CustomResourceDefinition` and its schemas are
//! structural (every field typed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use lxd_operator_crds::generate::{CRD_YAML_PATH, REGENERATE_COMMAND, all_crds, crd_yaml};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `openAPIV3Schema` of a CRD's one version.
fn root_schema(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap()
}

fn yaml_documents(yaml: &str) -> Vec<&str> {
    yaml.split("\n---\n").skip(1).collect()
}

#[test]
fn checked_in_crd_yaml_matches_the_types() {
    let path = repo_root().join(CRD_YAML_PATH);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with `{REGENERATE_COMMAND}`",
            path.display()
        )
    });
    let generated = crd_yaml().unwrap();
    assert!(
        checked_in == generated,
        "{CRD_YAML_PATH} is out of date with the Rust types in crds/. Regenerate it with:\n    {REGENERATE_COMMAND}"
    );
}

#[test]
fn every_generated_document_parses_as_a_crd() {
    let yaml = crd_yaml().unwrap();
    let documents = yaml_documents(&yaml);
    assert_eq!(documents.len(), 4);
    let kinds: Vec<String> = documents
        .iter()
        .map(|doc| {
            let crd: CustomResourceDefinition = serde_saphyr::from_str(doc).unwrap();
            crd.spec.names.kind
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "LxdCluster",
            "LxdContainer",
            "LxdContainerSet",
            "LxdPlacementPolicy"
        ]
    );
}

#[test]
fn every_kind_has_status_printer_columns_short_names_and_the_lxd_category() {
    for crd in all_crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["lxd".to_owned()][..]),
            "{}",
            names.kind
        );
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{}",
            names.kind
        );
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{}",
            names.kind
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{}",
            names.kind
        );
        let status = &version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap()
            .properties
            .as_ref()
            .unwrap()["status"];
        let status_fields = status.properties.as_ref().unwrap();
        assert!(status_fields.contains_key("conditions"), "{}", names.kind);
        assert!(
            status_fields.contains_key("observedGeneration"),
            "{}",
            names.kind
        );
    }
}

#[test]
fn every_schema_is_structural() {
    for crd in all_crds() {
        let schema = root_schema(&crd);
        let mut problems = Vec::new();
        check_structural(schema, &crd.spec.names.kind, &mut problems);
        assert!(
            problems.is_empty(),
            "not structural:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn every_field_is_documented_for_kubectl_explain() {
    fn walk(schema: &JSONSchemaProps, path: &str, missing: &mut Vec<String>) {
        for (name, child) in schema.properties.iter().flatten() {
            let child_path = format!("{path}.{name}");
            let inherited =
                ["apiVersion", "kind", "metadata"].contains(&name.as_str()) && !path.contains('.');
            if child.description.as_deref().is_none_or(str::is_empty) && !inherited {
                missing.push(child_path.clone());
            }
            walk(child, &child_path, missing);
            if let Some(JSONSchemaPropsOrArray::Schema(items)) = &child.items {
                walk(items, &format!("{child_path}[]"), missing);
            }
        }
    }
    for crd in all_crds() {
        let schema = root_schema(&crd);
        let mut missing = Vec::new();
        walk(schema, &crd.spec.names.kind, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}

/// The rules of a structural schema, as the Kubernetes API server checks them: every node
/// says its type (unless it is int-or-string or keeps unknown fields), arrays say their items,
/// and the branches of allOf/anyOf/oneOf/not only validate (no type, description, default or
/// nullable of their own).
fn check_structural(schema: &JSONSchemaProps, path: &str, problems: &mut Vec<String>) {
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    if int_or_string {
        if schema.type_.is_some() {
            problems.push(format!("{path}: int-or-string must not have a type"));
        }
    } else if schema.type_.is_none() && !preserve {
        problems.push(format!("{path}: no type"));
    }
    if schema.type_.as_deref() == Some("array") && schema.items.is_none() {
        problems.push(format!("{path}: array without items"));
    }
    if schema.properties.is_some()
        && matches!(
            schema.additional_properties,
            Some(JSONSchemaPropsOrBool::Schema(_))
        )
    {
        problems.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(JSONSchemaPropsOrArray::Schemas(_)) = &schema.items {
        problems.push(format!("{path}: items must be one schema"));
    }
    for (name, child) in schema.properties.iter().flatten() {
        check_structural(child, &format!("{path}.{name}"), problems);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = &schema.additional_properties {
        check_structural(child, &format!("{path}[*]"), problems);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(child)) = &schema.items {
        check_structural(child, &format!("{path}[]"), problems);
    }
    let branches = schema
        .all_of
        .iter()
        .flatten()
        .chain(schema.any_of.iter().flatten())
        .chain(schema.one_of.iter().flatten())
        .chain(schema.not.as_deref());
    for branch in branches {
        check_value_validation_only(branch, path, problems);
    }
}

fn check_value_validation_only(schema: &JSONSchemaProps, path: &str, problems: &mut Vec<String>) {
    if schema.type_.is_some()
        || schema.description.is_some()
        || schema.default.is_some()
        || schema.nullable.is_some()
        || schema.additional_properties.is_some()
    {
        problems.push(format!(
            "{path}: a branch of allOf/anyOf/oneOf/not declares more than value validations"
        ));
    }
    for child in schema.properties.iter().flat_map(|p| p.values()) {
        check_value_validation_only(child, path, problems);
    }
}
