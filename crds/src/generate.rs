//! The CustomResourceDefinitions of every kind, as objects and as the YAML that is checked in
//! under `charts/lxd-operator/crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{LxdCluster, LxdContainer, LxdContainerSet, LxdPlacementPolicy};

/// Where the generated YAML is checked in, relative to the repository root.
pub const CRD_YAML_PATH: &str = "charts/lxd-operator/crds/lxd-operator.yaml";
/// The command that regenerates [`CRD_YAML_PATH`].
pub const REGENERATE_COMMAND: &str =
    "cargo run -p lxd-operator -- crds > charts/lxd-operator/crds/lxd-operator.yaml";

/// Failure to render the CRDs as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the CRD {name} as YAML: {source}")]
pub struct RenderError {
    name: String,
    #[source]
    source: serde_saphyr::ser::Error,
}

/// The CRD of every kind, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        LxdCluster::crd(),
        LxdContainer::crd(),
        LxdContainerSet::crd(),
        LxdPlacementPolicy::crd(),
    ];
    for version in crds.iter_mut().flat_map(|crd| crd.spec.versions.iter_mut()) {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            unwrap_descriptions(schema);
        }
    }
    crds
}

/// Joins the lines of each doc comment into paragraphs: `kubectl explain` wraps text itself,
/// and the line breaks of the Rust source would show up in the middle of its lines.
fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = description
            .split("\n\n")
            .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|properties| properties.values_mut())
        .chain(match schema.additional_properties.as_mut() {
            Some(JSONSchemaPropsOrBool::Schema(additional)) => Some(additional.as_mut()),
            _ => None,
        })
        .chain(match schema.items.as_mut() {
            Some(JSONSchemaPropsOrArray::Schema(items)) => vec![items.as_mut()],
            Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().collect(),
            None => vec![],
        });
    for child in children {
        unwrap_descriptions(child);
    }
}

/// All CRDs as one multi-document YAML stream, as `lxd-operator crds` prints it.
pub fn crd_yaml() -> Result<String, RenderError> {
    let mut out = format!(
        "# Generated from the Rust types in crds/ by `{REGENERATE_COMMAND}`.\n# Do not edit.\n"
    );
    for crd in all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let doc = serde_saphyr::to_string(&crd).map_err(|source| RenderError { name, source })?;
        out.push_str("---\n");
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
