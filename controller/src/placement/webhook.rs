//! The webhook extender's protocol (bring your own strategy). For each decision the operator
//! POSTs a [`WebhookRequest`] as JSON to the policy's webhook; the webhook answers a
//! [`WebhookResponse`]: members to leave out (with a reason) and/or scores from 0 to 100, which
//! are added with the webhook's weight. Members the webhook does not mention keep their scores
//! (and get 0 from the webhook when it scores others).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Member;

/// What the operator sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRequest {
    /// The container.
    pub container: WebhookContainer,
    /// The members that passed the built-in filters, with their figures.
    pub members: Vec<WebhookMember>,
    /// The built-in weighted score of each of them.
    pub scores: BTreeMap<String, f64>,
}

/// The container, as the webhook sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookContainer {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Requested CPU cores.
    pub cpu: f64,
    /// Requested memory, bytes.
    pub memory_bytes: f64,
}

/// A member, as the webhook sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMember {
    /// Name.
    pub name: String,
    /// Failure domain.
    pub failure_domain: String,
    /// Cluster groups.
    pub groups: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// CPUs.
    pub cpu_capacity: f64,
    /// Memory, bytes.
    pub memory_capacity_bytes: f64,
    /// CPU requested by instances there.
    pub cpu_allocated: f64,
    /// Memory requested by instances there, bytes.
    pub memory_allocated_bytes: f64,
    /// Instances there.
    pub instances: u32,
}

impl From<&Member> for WebhookMember {
    fn from(member: &Member) -> Self {
        WebhookMember {
            name: member.name.clone(),
            failure_domain: member.failure_domain.clone(),
            groups: member.groups.clone(),
            labels: member.labels.clone(),
            cpu_capacity: member.capacity.cpu,
            memory_capacity_bytes: member.capacity.memory,
            cpu_allocated: member.allocated.cpu,
            memory_allocated_bytes: member.allocated.memory,
            instances: member.instances,
        }
    }
}

/// What the webhook answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResponse {
    /// Members to leave out, with the reason (shown in the explanation).
    #[serde(default)]
    pub filtered: BTreeMap<String, String>,
    /// Scores from 0 to 100 by member.
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
}
