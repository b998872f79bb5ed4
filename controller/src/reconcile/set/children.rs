//! A set's children: the LxdContainer made from its template for an ordinal, the template's
//! revision, and what the set reads back from each child. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use lxd_operator_crds::container::{LxdContainerSpec, TopologySpreadConstraint};
use lxd_operator_crds::set::{REVISION_LABEL, SET_LABEL};
use lxd_operator_crds::shared::CONDITION_READY;
use lxd_operator_crds::{LxdContainer, LxdContainerSet};
use sha2::{Digest, Sha256};

use super::decide::Child;

/// The name of the child with `ordinal`.
pub fn child_name(set: &str, ordinal: u32) -> String {
    format!("{set}-{ordinal}")
}

/// The ordinal in a child's name, if it is one of the set's names.
pub fn ordinal_of(set: &str, child: &str) -> Option<u32> {
    let digits = child.strip_prefix(set)?.strip_prefix('-')?;
    // `web-01` is not a name the set gives; parsing would take it for `web-1`.
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The spec each child gets: the template's, with topology spread constraints that name no
/// selector counting the set's children (the set's selector), since each child's own labels
/// would match only itself.
pub fn child_spec(set: &LxdContainerSet) -> LxdContainerSpec {
    let mut spec = set.spec.template.spec.clone();
    if let Some(placement) = spec.placement.as_mut() {
        for constraint in &mut placement.topology_spread_constraints {
            fill_selector(constraint, &set.spec.selector);
        }
    }
    spec
}

fn fill_selector(constraint: &mut TopologySpreadConstraint, selector: &LabelSelector) {
    if constraint.label_selector.is_none() {
        constraint.label_selector = Some(selector.clone());
    }
}

/// The revision of the set's template: a short hash of the child spec and the template's
/// labels and annotations, as a StatefulSet's controller-revision hash.
pub fn revision(set: &LxdContainerSet) -> String {
    let template = (&set.spec.template.metadata, child_spec(set));
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..5])
}

/// The labels of a child: the template's, its set's, and the revision it was made from.
pub fn child_labels(set: &LxdContainerSet, revision: &str) -> BTreeMap<String, String> {
    let mut labels = set.spec.template.metadata.labels.clone();
    labels.insert(SET_LABEL.to_owned(), set.name_any());
    labels.insert(REVISION_LABEL.to_owned(), revision.to_owned());
    labels
}

/// The child with `ordinal`, made from the current template and owned by the set.
pub fn new_child(set: &LxdContainerSet, ordinal: u32, revision: &str) -> LxdContainer {
    let annotations = &set.spec.template.metadata.annotations;
    LxdContainer {
        metadata: ObjectMeta {
            name: Some(child_name(&set.name_any(), ordinal)),
            namespace: set.namespace(),
            labels: Some(child_labels(set, revision)),
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
            owner_references: owner_reference(set).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: child_spec(set),
        status: None,
    }
}

/// The reference that makes the set a child's controller (deleting the set deletes it).
fn owner_reference(set: &LxdContainerSet) -> Option<OwnerReference> {
    set.controller_owner_ref(&())
        .map(|reference| OwnerReference {
            block_owner_deletion: Some(true),
            ..reference
        })
}

/// Whether `container` is controlled by `set`.
pub fn controlled_by(container: &LxdContainer, set: &LxdContainerSet) -> bool {
    let uid = set.metadata.uid.as_deref();
    container
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// Whether a container is Ready for the spec it has now (not being deleted or moved).
pub fn is_ready(container: &LxdContainer) -> bool {
    container.metadata.deletion_timestamp.is_none()
        && container.status.as_ref().is_some_and(|status| {
            status.moving.is_none()
                && status.conditions.iter().any(|c| {
                    c.type_ == CONDITION_READY
                        && c.status == "True"
                        && c.observed_generation == container.metadata.generation
                })
        })
}

/// What the set reads of a child.
pub fn observe(set_name: &str, container: &LxdContainer) -> Child {
    let name = container.name_any();
    let ready = is_ready(container);
    Child {
        ordinal: ordinal_of(set_name, &name),
        revision: container.labels().get(REVISION_LABEL).cloned(),
        spec: container.spec.clone(),
        ready,
        deleting: container.metadata.deletion_timestamp.is_some(),
        name,
    }
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::{Placement, WhenUnsatisfiable};
    use lxd_operator_crds::testing::container_set;

    use super::*;

    fn web() -> LxdContainerSet {
        let mut set = container_set("web", 3);
        set.spec.template.spec.placement = Some(Placement {
            topology_spread_constraints: vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "zone".into(),
                when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
                label_selector: None,
            }],
            ..Placement::default()
        });
        set.metadata.namespace = Some("shop".into());
        set.metadata.uid = Some("set-uid".into());
        set
    }

    #[test]
    fn a_child_is_named_by_ordinal_owned_by_its_set_and_labelled_with_the_revision() {
        let set = web();
        let revision = revision(&set);
        let child = new_child(&set, 2, &revision);
        assert_eq!(child.name_any(), "web-2");
        assert_eq!(child.namespace().as_deref(), Some("shop"));
        assert!(controlled_by(&child, &set));
        assert_eq!(child.labels()[REVISION_LABEL], revision);
        assert_eq!(child.labels()["app"], "web");
        let constraint = &child
            .spec
            .placement
            .as_ref()
            .unwrap()
            .topology_spread_constraints[0];
        assert_eq!(constraint.label_selector.as_ref(), Some(&set.spec.selector));
    }

    #[test]
    fn the_revision_follows_the_template_only() {
        let mut set = web();
        let before = revision(&set);
        set.spec.replicas = 9;
        assert_eq!(revision(&set), before);
        set.spec
            .template
            .spec
            .config
            .insert("user.x".into(), "1".into());
        assert_ne!(revision(&set), before);
    }

    #[test]
    fn ordinals_are_read_from_the_set_s_own_names_only() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
        assert_eq!(ordinal_of("web", "web-a"), None);
    }
}
