//! Types and schema pieces shared by more than one kind.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};

/// Whether `labels` match `selector` (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
/// `Exists`, `DoesNotExist`; any other operator, or `In` without values, matches nothing). An
/// empty selector matches everything. The one matcher of the project: placement, the set
/// controller and the API server's admission all use it.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let by_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .all(|requirement| {
            let value = labels.get(&requirement.key);
            let listed = || {
                value.is_some_and(|v| {
                    requirement
                        .values
                        .iter()
                        .flatten()
                        .any(|listed| listed == v)
                })
            };
            match requirement.operator.as_str() {
                "In" => listed(),
                "NotIn" => !listed(),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// A label selector as a Kubernetes label query (`app=web,tier in (a,b),!legacy`), as the
/// scale subresource reports a selector and as messages show one.
pub fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for requirement in selector.match_expressions.iter().flatten() {
        let values = requirement.values.clone().unwrap_or_default().join(",");
        parts.push(match requirement.operator.as_str() {
            "In" => format!("{} in ({values})", requirement.key),
            "NotIn" => format!("{} notin ({values})", requirement.key),
            "Exists" => requirement.key.clone(),
            _ => format!("!{}", requirement.key),
        });
    }
    parts.join(",")
}

/// A Kubernetes object name (RFC 1123 subdomain): lower-case alphanumerics, `-` and `.`,
/// starting and ending with an alphanumeric, at most 253 characters.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Kubernetes namespace name (RFC 1123 label): at most 63 characters.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An LXD instance name as LXD accepts it, limited to names that start with a letter (LXD
/// refuses names that are numbers; starting with a letter rules those out in one regex).
pub const INSTANCE_NAME_PATTERN: &str = r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$";
/// An LXD cluster member name: a host name label of at most 63 characters.
pub const MEMBER_NAME_PATTERN: &str = r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$";
/// A non-negative Kubernetes quantity without sign, as memory is written (`256Mi`, `1G`, `0.5Gi`).
pub const QUANTITY_PATTERN: &str =
    r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE]|[eE][+-]?[0-9]+)?$";

/// The condition type every kind reports: the object is in the state its spec asks for.
pub const CONDITION_READY: &str = "Ready";
/// The condition type of an LxdCluster whose event stream is connected.
pub const CONDITION_EVENT_STREAM: &str = "EventStream";
/// The condition type of an LxdCluster formed from `spec.servers`: True when every server listed
/// is an online member, as asked.
pub const CONDITION_FORMED: &str = "Formed";
/// The condition type of an LxdCluster formed from `spec.servers` whose servers run different
/// LXD versions (True names them): LXD members must all run the same version to work together.
pub const CONDITION_VERSION_SKEW: &str = "VersionSkew";
/// The condition type of an LxdContainer checked against its cluster's guardrails: False names
/// what they refuse (nothing is created, or an instance from before is left as it is).
pub const CONDITION_ADMITTED: &str = "Admitted";
/// The condition type of an LxdContainer that has a member chosen for it.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
/// Condition type of an LxdContainer whose member is drained: present while the container must
/// leave it, with what holds it there (no member fits, a failed move, a move slot) or that it
/// moves.
pub const CONDITION_DRAINING: &str = "Draining";
/// Condition type of an LxdContainer the rebalancer asked to move: present while it waits for
/// its turn (a move slot, its set's budget) or moves, False when the move failed.
pub const CONDITION_REBALANCING: &str = "Rebalancing";

/// A reference to an `LxdCluster` by name (LxdClusters are cluster-scoped).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    /// Name of the LxdCluster.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A reference to a Secret in a given namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// Schema of a memory quantity: a string such as `256Mi` or a plain number of bytes, as
/// Kubernetes writes quantities (`x-kubernetes-int-or-string`).
pub fn memory_quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "pattern": QUANTITY_PATTERN,
        "minimum": 1,
        "description": "Memory as a Kubernetes quantity: a number of bytes, or a number with a suffix (Ki, Mi, Gi, Ti; k, M, G, T), e.g. `256Mi`."
    })
}

/// Schema of a strictly positive number of CPU cores (`cpu > 0`), in the OpenAPI v3.0 form
/// Kubernetes expects (a boolean `exclusiveMinimum`).
pub fn positive_cpu_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": true,
        "description": "CPU cores, greater than 0. A whole number limits the container to that many cores (`limits.cpu`); a fraction such as 0.5 limits its CPU time (`limits.cpu.allowance`)."
    })
}

/// A quantity of memory or CPU as users write it: an integer or a string.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    /// A plain number.
    Int(i64),
    /// A string such as `256Mi`.
    String(String),
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}
