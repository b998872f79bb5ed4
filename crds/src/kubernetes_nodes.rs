//! LXD beside Kubernetes on the same hosts: which Kubernetes Node each member shares its host
//! with, so that placement counts what that Node's Pods request and kube-scheduler is told
//! (figures and a taint on the Node) what LXD holds there.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shared::{DNS_SUBDOMAIN_PATTERN, MEMBER_NAME_PATTERN};

/// The key of the taint the operator puts on a mapped Node whose host LXD holds past
/// `taintThresholdPercent`, and takes off again below it.
pub const PRESSURE_TAINT: &str = "lxd-operator.dev/lxd-pressure";
/// Node annotation: the LxdCluster and member (`<cluster>/<member>`) on the Node's host.
pub const MEMBER_ANNOTATION: &str = "lxd-operator.dev/lxd-member";
/// Node annotation: CPU cores LXD's instances on the host are limited to (a quantity).
pub const CPU_ANNOTATION: &str = "lxd-operator.dev/lxd-cpu";
/// Node annotation: memory LXD's instances on the host are limited to (a quantity, bytes).
pub const MEMORY_ANNOTATION: &str = "lxd-operator.dev/lxd-memory";
/// Node annotation: LXD's share of the host, in percent of its CPU or its memory, whichever
/// is higher.
pub const SHARE_ANNOTATION: &str = "lxd-operator.dev/lxd-share-percent";

/// Kubernetes Nodes that run on the same hosts as this cluster's members (kubelet beside
/// LXD). For a mapped member, placement counts what the Pods bound to its Node request beside
/// LXD's own instances, and the operator writes on the Node what LXD holds there (annotations
/// `lxd-operator.dev/lxd-*`) and taints it `lxd-operator.dev/lxd-pressure:NoSchedule` while
/// LXD holds more than `taintThresholdPercent` of the host. Needs the operator to run with
/// `--kubernetes-nodes` (the chart's `kubernetesNodes.enabled`), which lets it read Pods and
/// Nodes and patch Nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesNodes {
    /// The Node of each member that `matchBy` does not find (or finds wrongly): a member named
    /// here is mapped to this Node whatever `matchBy` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["member"]
        )
    )]
    pub member_nodes: Vec<MemberNode>,

    /// How a member not named in `memberNodes` finds its Node: `HostName` (the default), the Node
    /// whose name, or whose `kubernetes.io/hostname` label, is the member's name; `None`, only
    /// members named in `memberNodes` are mapped.
    #[serde(default)]
    pub match_by: NodeMatch,

    /// How much of a mapped host LXD's instances may hold (their CPU or memory limits, in
    /// percent of what the member has) before the operator taints the member's Node
    /// `lxd-operator.dev/lxd-pressure:NoSchedule`, so that kube-scheduler places no more Pods
    /// there. The taint goes when LXD's share drops to the threshold or below.
    #[serde(default = "default_taint_threshold_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub taint_threshold_percent: u32,
}

/// One member and the Kubernetes Node on its host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberNode {
    /// The member (LXD's server name).
    #[schemars(regex(pattern = MEMBER_NAME_PATTERN))]
    pub member: String,
    /// The name of the Node on the member's host.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub node: String,
}

/// How members find their Nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NodeMatch {
    /// The Node whose name, or whose `kubernetes.io/hostname` label, is the member's name.
    #[default]
    HostName,
    /// Only the members `memberNodes` names.
    None,
}

fn default_taint_threshold_percent() -> u32 {
    80
}

impl Default for KubernetesNodes {
    fn default() -> Self {
        KubernetesNodes {
            member_nodes: Vec::new(),
            match_by: NodeMatch::default(),
            taint_threshold_percent: default_taint_threshold_percent(),
        }
    }
}
