//! `LxdContainerSet`: a fleet of like containers, as a StatefulSet is of pods.

// Every `printcolumn(...)` of kube's derive repeats `type_ = ...`, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::container::LxdContainerSpec;
use crate::shared::{Condition, IntOrString, LabelSelector};

/// The label on each child that holds the set's template revision it was made from.
pub const REVISION_LABEL: &str = "lxd-operator.dev/revision";
/// The label on each child that names its set.
pub const SET_LABEL: &str = "lxd-operator.dev/set";

/// The condition type of a set with at least `replicas - maxUnavailable` children Ready.
pub const CONDITION_AVAILABLE: &str = "Available";
/// The condition type of a set that is creating, updating or removing children.
pub const CONDITION_PROGRESSING: &str = "Progressing";

/// The rule that the selector matches the template's labels, in CEL for a Kubernetes API
/// server. The embedded API server knows this rule by its text and evaluates it natively.
pub const SELECTOR_MATCHES_TEMPLATE_RULE: &str = "!has(self.selector.matchLabels) || self.selector.matchLabels.all(k, has(self.template.metadata) && has(self.template.metadata.labels) && k in self.template.metadata.labels && self.template.metadata.labels[k] == self.selector.matchLabels[k])";

/// A set of like LxdContainers: `replicas` children named `<set>-<ordinal>` made from one
/// template, spread by their placement, updated in a rolling fashion.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lxd-operator.dev",
    version = "v1alpha1",
    kind = "LxdContainerSet",
    plural = "lxdcontainersets",
    namespaced,
    shortname = "lxdcs",
    category = "lxd",
    status = "LxdContainerSetStatus",
    derive = "PartialEq",
    doc = "A set of like LxdContainers, named <set>-<ordinal> and made from one template, kept at the number of replicas asked for and updated in a rolling fashion.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.updatedReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": SELECTOR_MATCHES_TEMPLATE_RULE,
    "message": "selector does not match the template's labels",
    "fieldPath": ".selector",
    "reason": "FieldValueInvalid"
}]))]
pub struct LxdContainerSetSpec {
    /// How many containers the set keeps. Scaling down removes the highest ordinals first.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,

    /// Which LxdContainers belong to the set. It must match the template's labels (children
    /// are also owned by the set, so other containers with these labels are never taken over).
    pub selector: LabelSelector,

    /// What each child is made of.
    pub template: ContainerTemplate,

    /// How children made from an older template are brought to the current one.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,
}

fn one() -> i32 {
    1
}

/// The template of the set's children.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplate {
    /// Labels and annotations each child gets.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// The LxdContainer spec of each child. `instanceName` is not allowed: each child's
    /// instance is named after the child.
    pub spec: LxdContainerSpec,
}

/// Labels and annotations of the children.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of each child; the set's selector must match them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of each child.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How children are updated when the template changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `RollingUpdate` (default): a change LXD applies to a running instance (resources,
    /// config keys, state) is made in place, child by child; one it cannot (image, profiles,
    /// devices, ephemeral, cluster, placement) replaces the child, with at most
    /// `rollingUpdate.maxUnavailable` children not Ready at once. `OnDelete`: children are
    /// updated only when deleted by hand.
    #[serde(default, rename = "type")]
    pub strategy: UpdateStrategyType,
    /// Settings of `RollingUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        UpdateStrategy {
            strategy: UpdateStrategyType::RollingUpdate,
            rolling_update: None,
        }
    }
}

/// The kinds of update strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategyType {
    /// Update children as soon as the template changes, within `maxUnavailable`.
    #[default]
    RollingUpdate,
    /// Update a child only when it is deleted.
    OnDelete,
}

/// How far a rolling update may go at once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// How many children may be not Ready at once during an update: a number (at least 1) or
    /// a percentage of `replicas` (rounded down, at least 1). Default 1. Drains and
    /// rebalancing respect it too, as a disruption budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "max_unavailable_schema")]
    pub max_unavailable: Option<IntOrString>,
}

/// A count of at least 1, or a percentage.
fn max_unavailable_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "pattern": "^(100|[1-9][0-9]?)%$",
        "minimum": 1,
        "description": "A number of children (at least 1) or a percentage of replicas, such as `25%`."
    })
}

impl RollingUpdate {
    /// `maxUnavailable` as a count for `replicas` (at least 1).
    pub fn max_unavailable_for(&self, replicas: i32) -> i32 {
        let count = match &self.max_unavailable {
            None => 1,
            Some(IntOrString::Int(n)) => i32::try_from(*n).unwrap_or(i32::MAX),
            Some(IntOrString::String(percent)) => percent
                .trim_end_matches('%')
                .parse::<i64>()
                .map(|p| (i64::from(replicas) * p / 100) as i32)
                .unwrap_or(1),
        };
        count.max(1)
    }
}

impl UpdateStrategy {
    /// How many children may be not Ready at once for `replicas`.
    pub fn max_unavailable(&self, replicas: i32) -> i32 {
        self.rolling_update
            .clone()
            .unwrap_or_default()
            .max_unavailable_for(replicas)
    }
}

/// What the operator last saw of the set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LxdContainerSetStatus {
    /// Children that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Children whose Ready condition is True.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Children made from the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// The revision most children were made from before the update under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision of the current template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The selector as a label query string (`app=web`), for the scale subresource (and a
    /// HorizontalPodAutoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`: enough children are Ready (at least replicas minus maxUnavailable).
    /// `Progressing`: children are being created, updated or removed, or cannot be placed (the
    /// message says how many and why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unavailable_is_a_count_or_a_share_of_replicas_and_at_least_one() {
        let with = |value: Option<IntOrString>| RollingUpdate {
            max_unavailable: value,
        };
        assert_eq!(with(None).max_unavailable_for(10), 1);
        assert_eq!(with(Some(IntOrString::Int(3))).max_unavailable_for(10), 3);
        assert_eq!(
            with(Some(IntOrString::String("25%".into()))).max_unavailable_for(10),
            2
        );
        assert_eq!(
            with(Some(IntOrString::String("10%".into()))).max_unavailable_for(3),
            1
        );
    }
}
