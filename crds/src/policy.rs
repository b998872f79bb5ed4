//! `LxdPlacementPolicy`: a named placement strategy built from plugins.

// Every `printcolumn(...)` of kube's derive repeats `type_ = ...`, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shared::Condition;

/// A placement plugin name: lower-case words joined by `-`, e.g. `least-allocated`.
pub const PLUGIN_NAME_PATTERN: &str = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$";

/// A placement strategy assembled from plugins: filters remove members that cannot or must not
/// take a container, scorers rate the rest from 0 to 100, and the weighted sum picks the member.
/// An optional webhook lets a strategy of your own filter and score too.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lxd-operator.dev",
    version = "v1alpha1",
    kind = "LxdPlacementPolicy",
    plural = "lxdplacementpolicies",
    shortname = "lxdpp",
    category = "lxd",
    status = "LxdPlacementPolicyStatus",
    derive = "PartialEq",
    doc = "A named placement strategy for LxdContainers: filter and scorer plugins with weights, and an optional webhook extender.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Webhook", type_ = "string", json_path = ".spec.webhook.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LxdPlacementPolicySpec {
    /// Filter plugins, applied in order. The filters every placement needs (member online,
    /// architecture, pinned target) always apply, whether listed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub filters: Vec<FilterPlugin>,

    /// Score plugins with their weights. The member with the highest weighted sum wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub scorers: Vec<ScorerPlugin>,

    /// How far requested resources may exceed a member's capacity (capacity filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overcommit: Option<Overcommit>,

    /// How members with equal scores are ordered.
    #[serde(default)]
    pub tie_break: TieBreak,

    /// An HTTP(S) service consulted on every decision (bring your own strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookExtender>,
}

/// A filter plugin by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterPlugin {
    /// Name of a built-in filter plugin.
    #[schemars(length(min = 1, max = 63), regex(pattern = PLUGIN_NAME_PATTERN))]
    pub name: String,
    /// Plugin arguments, as documented for the plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
}

/// A score plugin by name with its weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScorerPlugin {
    /// Name of a built-in score plugin.
    #[schemars(length(min = 1, max = 63), regex(pattern = PLUGIN_NAME_PATTERN))]
    pub name: String,
    /// Weight of this plugin's score (0 to 100 per member) in the sum.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: u32,
    /// Plugin arguments, as documented for the plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

/// Overcommit ratios: 1.0 allows exactly the capacity, 2.0 twice the capacity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overcommit {
    /// Ratio of requested CPU cores to the member's CPUs.
    #[serde(default = "default_ratio")]
    #[schemars(range(min = 0.1, max = 100.0))]
    pub cpu: f64,
    /// Ratio of requested memory to the member's memory.
    #[serde(default = "default_ratio")]
    #[schemars(range(min = 0.1, max = 100.0))]
    pub memory: f64,
}

fn default_ratio() -> f64 {
    1.0
}

/// Order among members with equal scores.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TieBreak {
    /// The member whose name sorts first.
    #[default]
    MemberName,
    /// Members in turn, starting after the one chosen last.
    RoundRobin,
}

/// A webhook that takes part in placement decisions. The operator POSTs the container, the
/// candidate members with their figures and the built-in scores; the webhook answers with the
/// members to drop and/or scores to add, weighted by `weight`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookExtender {
    /// URL of the webhook: `https://`, or `http://` to the operator's own host only (127.0.0.0/8,
    /// ::1, localhost). Redirects are not followed; a user and password in it are sent but
    /// never shown in logs or status.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://\S+$"))]
    pub url: String,
    /// How long to wait for an answer, in milliseconds.
    #[serde(default = "default_timeout_millis")]
    #[schemars(range(min = 10, max = 30000))]
    pub timeout_millis: u32,
    /// PEM CA certificates that sign the webhook's certificate; the system roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// What happens when the webhook fails or times out.
    #[serde(default)]
    pub failure_policy: WebhookFailurePolicy,
    /// Weight of the webhook's scores in the sum.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: u32,
}

fn default_timeout_millis() -> u32 {
    2000
}

/// What to do when the webhook cannot be asked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WebhookFailurePolicy {
    /// Decide without the webhook.
    #[default]
    Ignore,
    /// Keep the container Pending, with the reason, until the webhook answers.
    Fail,
}

/// What the operator last saw of the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LxdPlacementPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when every plugin named exists and the arguments are valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
