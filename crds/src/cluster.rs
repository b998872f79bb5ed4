//! `LxdCluster`: how to reach one LXD cluster, and what its members look like.

// Every `printcolumn(...)` of kube's derive repeats `type_ = ...`, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::guardrails::Guardrails;
use crate::kubernetes_nodes::KubernetesNodes;
use crate::quota::{NamespaceQuotaStatus, NamespaceQuotas};
use crate::rebalance::{RebalanceSettings, RebalanceStatus};
use crate::shared::{
    Condition, DNS_SUBDOMAIN_PATTERN, LabelSelector, MEMBER_NAME_PATTERN, SecretReference,
};

/// An LXD endpoint: `https://host:port` of a cluster member, or `unix:///path/to/unix.socket`.
pub const ENDPOINT_PATTERN: &str = r"^(https://[^/\s]+/?|unix:///\S+)$";
/// A server's address: `https://host:port`.
pub const SERVER_ADDRESS_PATTERN: &str = r"^https://[^/\s]+:[0-9]{1,5}/?$";
/// A SHA-256 certificate fingerprint: 64 hex digits, optionally prefixed `sha256:` and
/// separated by colons in pairs as `openssl x509 -fingerprint` prints it.
pub const FINGERPRINT_PATTERN: &str =
    r"^(sha256:|SHA256:)?([0-9a-fA-F]{64}|([0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2})$";

/// How to reach one LXD cluster: its member endpoints, the client certificate the operator
/// authenticates with, and the server certificate it pins.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lxd-operator.dev",
    version = "v1alpha1",
    kind = "LxdCluster",
    plural = "lxdclusters",
    shortname = "lxdcl",
    category = "lxd",
    status = "LxdClusterStatus",
    derive = "PartialEq",
    doc = "An LXD cluster the operator places containers on: its endpoints, credentials, and members as last seen.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Members",
        type_ = "string",
        description = "Online members / all members",
        json_path = ".status.memberSummary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        priority = 1,
        json_path = ".spec.endpoints[0]"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LxdClusterSpec {
    /// Endpoints of the cluster's members, tried in order: `https://host:port` URLs, or one
    /// `unix:///path/to/unix.socket` for an LXD on the operator's own host. Listing several
    /// members keeps the cluster reachable when one of them is down. May be left out when
    /// `servers` lists the servers the operator forms the cluster from: it then reaches the
    /// cluster through the servers that are its members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = ENDPOINT_PATTERN)))]
    pub endpoints: Vec<String>,

    /// LXD servers the operator forms into this cluster and keeps as its members, in place of
    /// `lxd init` on each host. The first server that is not yet clustered bootstraps the
    /// cluster when none of them is clustered (its images and settings become the cluster's);
    /// every other one joins it in turn. A server added here joins; a server removed from here
    /// that the operator joined is drained of our containers and then removed from the
    /// cluster. Each member's failure domain, groups and labels are set as written here, and
    /// put back when changed in LXD.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["name"],
            "x-kubernetes-validations" = [{
                "rule": "self.all(s, self.exists_one(t, t.address == s.address))",
                "message": "each server's address must be unique"
            }]
        )
    )]
    pub servers: Vec<ClusterServer>,

    /// Storage pools the cluster must have, made when the cluster is formed (and when missing
    /// later). A joining server gets each of them, with the `source` its entry in
    /// `servers[].storagePools` gives (empty by default, which suits `dir`). The default
    /// profile's root disk is put on the first of them unless it has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub storage_pools: Vec<ClusterStoragePool>,

    /// Secret (type `kubernetes.io/tls`, keys `tls.crt` and `tls.key`) holding the client
    /// certificate and key the operator presents to LXD. The certificate must be trusted by
    /// the cluster (`lxc config trust add`, or `lxd-operator lxd trust` with a token). Required
    /// for `https://` endpoints; unused for a unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretReference>,

    /// The certificate the cluster's members must present. Every member of an LXD cluster
    /// serves the same cluster certificate, so one pin covers all endpoints. Required for
    /// `https://` endpoints unless `insecureSkipTlsVerify` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<ServerCertificatePin>,

    /// Accept any server certificate. For development only: anyone on the network path can
    /// impersonate the cluster. The operator logs a warning on every connection.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_skip_tls_verify: bool,

    /// LXD project the operator creates and looks for instances in (with `projectMode:
    /// Shared`, the project of every container).
    #[serde(default = "default_project")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    )]
    pub project: String,

    /// How namespaces map to LXD projects. `Shared` (the default): every container in
    /// `project`. `PerNamespace`: each namespace's containers in an LXD project of its own,
    /// named `<projectPrefix><namespace>`, which the operator creates when the namespace's
    /// first container is made (sharing the images and profiles of LXD's `default` project),
    /// and whose limits it keeps at the namespace's quota (`limits.containers`,
    /// `limits.memory`), so that `lxc list --project <it>` shows a team exactly its own
    /// containers and LXD's project limits hold as a second wall. The project `default` is
    /// used as it is and never changed. A container keeps living in the project its instance
    /// was made in (`status.project`) when the mode changes; new ones follow the new mode.
    #[serde(default, skip_serializing_if = "ProjectMode::is_shared")]
    pub project_mode: ProjectMode,

    /// With `projectMode: PerNamespace`, what the name of each namespace's LXD project starts
    /// with (e.g. `k8s-`, so that namespace `team-a` gets project `k8s-team-a`), to keep
    /// apart the projects of several LxdClusters on one LXD cluster or projects made by hand.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 16), regex(pattern = r"^([a-z0-9][a-z0-9-]*)?$"))]
    pub project_prefix: String,

    /// Name of the LxdPlacementPolicy used by containers on this cluster that name neither a
    /// policy nor a strategy. Without it, the built-in `least-loaded` strategy applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub default_placement_policy: Option<String>,

    /// How often, in seconds, the operator refreshes members, capacity and load into status,
    /// besides refreshing on LXD events.
    #[serde(default = "default_member_sync_interval_seconds")]
    #[schemars(range(min = 5, max = 3600))]
    pub member_sync_interval_seconds: u32,

    /// How many instance creates the operator runs at once on one member; more wait their
    /// turn, first come first served. LXD unpacks an image for every create, and a member given
    /// dozens at once finishes each later than it would in small groups: a rollout of many
    /// containers was fastest, and cost LXD the least CPU, at one per member (measured with
    /// `hack/bench rollout --pacing`).
    /// 0 sends every create at once. Calls about an instance also go to its own member's
    /// endpoint when that member is one of `endpoints`, so that no member forwards for others.
    #[serde(default = "default_creates_per_member")]
    #[schemars(range(min = 0, max = 256))]
    pub creates_per_member: u32,

    /// Members (their LXD server names) that take no new containers, as `kubectl cordon`
    /// marks a node: containers already on them stay and are kept as they are, and placement
    /// leaves these members out, saying "cordoned" among its reasons. A member LXD itself
    /// reports as evacuated is left out the same way. Remove a name to uncordon it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub cordoned_members: Vec<String>,

    /// Members to empty before maintenance, as `kubectl drain` does: they take no new
    /// containers (as if cordoned), and each of our containers on them is moved to a member
    /// its placement policy chooses: stopped, moved by LXD (a cold migration that copies its
    /// root filesystem), and started again if it ran. A container no other member can take
    /// stays, and status says why. Remove a name to end the drain; the member then takes new
    /// containers again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub drained_members: Vec<String>,

    /// How many containers a drain moves at once, over the whole cluster, so that a drain
    /// never takes a whole application down at once.
    #[serde(default = "default_max_concurrent_moves")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_moves: u32,

    /// For containers with `onMemberFailure: Reschedule` that set no grace period of their
    /// own: how long, in seconds, a member must have been offline (counted from the last time
    /// it was seen online) before its containers are created anew elsewhere.
    #[serde(default = "default_member_failure_grace_period_seconds")]
    #[schemars(range(max = 86400))]
    pub member_failure_grace_period_seconds: u32,

    /// What containers on this cluster may ask of LXD. Without it the safe defaults hold:
    /// config keys and devices that hand out the host (privileged containers, `raw.*`, host
    /// paths, host devices, host networking) are refused, at admission and again by the
    /// controller before anything reaches LXD. Each field opens one door deliberately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<Guardrails>,

    /// Which namespaces may place containers on this cluster, by the namespaces' labels
    /// (e.g. `matchLabels: {lxd-operator.dev/tenant: "true"}`). Without it every namespace may,
    /// as suits a cluster of one team. A container (or set) in another namespace is refused at
    /// admission, and never created by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// How much of this cluster each namespace may hold: LxdContainers, CPU cores and memory
    /// (their `resources`), in total. A container that would take its namespace over is
    /// refused at admission with the figures (a set says so for the children it cannot make).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<NamespaceQuotas>,

    /// Kubernetes Nodes on the same hosts as this cluster's members: placement then counts
    /// what their Pods request, and the Nodes are told (and tainted) what LXD holds. Without
    /// it, members are placed on as if nothing else ran on their hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_nodes: Option<KubernetesNodes>,
    /// Rebalancing of running containers that allow it, when members come, go or fill up
    /// unevenly. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceSettings>,
}

/// One LXD server the operator forms into the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterServer {
    /// The name the server gets as a cluster member (LXD's `server_name`). Unique in the list.
    #[schemars(length(min = 1, max = 63), regex(pattern = MEMBER_NAME_PATTERN))]
    pub name: String,

    /// The server's API address, `https://host:port`, as it is to be reached by the operator
    /// and by the other members (it becomes the member's cluster address). Unique in the list.
    #[schemars(regex(pattern = SERVER_ADDRESS_PATTERN))]
    pub address: String,

    /// Secret holding a trust token for the operator, issued on this server with `lxc config
    /// trust add --name lxd-operator` (key `token` unless `key` says otherwise). The operator
    /// redeems it once to have its client certificate (`clientCertSecretRef`) trusted, pinning
    /// the server certificate the token names; no certificate is copied by hand. Not needed for
    /// a server that already trusts the operator's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_token_secret_ref: Option<SecretKeyReference>,

    /// The member's failure domain (LXD's default is `default`). Placement spreads over
    /// failure domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = MEMBER_NAME_PATTERN))]
    pub failure_domain: Option<String>,

    /// Cluster groups the member belongs to (made when missing). Every member is also in
    /// LXD's own group `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63), regex(pattern = MEMBER_NAME_PATTERN)))]
    pub groups: Vec<String>,

    /// Labels of the member, kept as its `user.<key>` member config (placement's member
    /// selectors read them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// This server's own settings of the cluster's storage pools, for its join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub storage_pools: Vec<MemberStoragePool>,
}

/// A storage pool of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStoragePool {
    /// The pool's name.
    #[schemars(length(min = 1, max = 63), regex(pattern = MEMBER_NAME_PATTERN))]
    pub name: String,
    /// LXD's storage driver: `dir`, `zfs`, `btrfs`, `lvm`, `ceph`, ...
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9]+$"))]
    pub driver: String,
    /// Pool configuration that is the same on every member (`size`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// One server's own setting of a cluster storage pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStoragePool {
    /// The pool's name, as in `spec.storagePools`.
    #[schemars(length(min = 1, max = 63), regex(pattern = MEMBER_NAME_PATTERN))]
    pub name: String,
    /// The pool's `source` on this server (a directory, a device, a dataset); empty lets
    /// LXD choose, as `dir` pools want.
    #[serde(default)]
    pub source: String,
}

/// A key of a Secret in a given namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63), regex(pattern = crate::shared::DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// The key in the Secret's data.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

impl LxdCluster {
    /// The members our containers must leave and that take no new ones: those the spec
    /// drains, and servers that left `spec.servers` and are being removed.
    pub fn members_to_empty(&self) -> Vec<String> {
        let leaving = self.status.iter().flat_map(|status| {
            status
                .servers
                .iter()
                .filter(|s| matches!(s.phase, ServerPhase::Draining | ServerPhase::Removing))
                .map(|s| s.name.clone())
        });
        let mut members: Vec<String> = self
            .spec
            .drained_members
            .iter()
            .cloned()
            .chain(leaving)
            .collect();
        members.sort();
        members.dedup();
        members
    }
}

fn default_token_key() -> String {
    "token".to_owned()
}

fn default_max_concurrent_moves() -> u32 {
    2
}

fn default_member_failure_grace_period_seconds() -> u32 {
    300
}

/// How namespaces map to LXD projects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProjectMode {
    /// Every container in the cluster's `project`.
    #[default]
    Shared,
    /// Each namespace's containers in an LXD project of its own.
    PerNamespace,
}

impl ProjectMode {
    fn is_shared(&self) -> bool {
        *self == ProjectMode::Shared
    }
}

/// LXD's own project: used as it is when a namespace maps to it, never reconfigured.
pub const LXD_DEFAULT_PROJECT: &str = "default";

impl LxdClusterSpec {
    /// The LXD project where a new container of `namespace` is made.
    pub fn project_for(&self, namespace: &str) -> String {
        match self.project_mode {
            ProjectMode::Shared => self.project.clone(),
            ProjectMode::PerNamespace => format!("{}{namespace}", self.project_prefix),
        }
    }
}

fn default_project() -> String {
    "default".to_owned()
}

fn default_member_sync_interval_seconds() -> u32 {
    30
}

fn default_creates_per_member() -> u32 {
    1
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The server certificate to pin: the PEM certificate itself, or the SHA-256 fingerprint of
/// its DER encoding (what `lxc info` prints as `certificate_fingerprint`). Set one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerCertificatePin {
    /// The cluster certificate in PEM form (`-----BEGIN CERTIFICATE-----` ...), e.g. the
    /// `cluster.crt` of a member's LXD directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 65536),
        regex(pattern = r"-----BEGIN CERTIFICATE-----")
    )]
    pub pem: Option<String>,
    /// SHA-256 fingerprint of the certificate: 64 hex digits, optionally `sha256:`-prefixed or
    /// colon-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = FINGERPRINT_PATTERN))]
    pub fingerprint: Option<String>,
}

/// What the operator last saw of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LxdClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the cluster answers and trusts the operator. When False, its
    /// reason says why: Unreachable, Untrusted, CertificateMismatch, InvalidSpec, ...
    /// `EventStream` is True while the operator follows the cluster's events (its message names
    /// the member); False (reason Reconnecting, with the error) while it reconnects, when
    /// drift in LXD is seen only at the next periodic check. For a cluster formed from
    /// `spec.servers`: `Formed` is True once every server listed is an online member (False
    /// counts the others by phase), and `VersionSkew` is True while they run different LXD
    /// versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When members, capacity and load were last read from LXD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Online members and all members, as `online/total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_summary: Option<String>,
    /// One entry per cluster member (one entry named after the host for a standalone LXD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The servers of `spec.servers`, and those the operator joined that are being removed:
    /// how far each is in forming the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerStatus>,
    /// SHA-256 of the certificate every member of the formed cluster serves, as the operator
    /// learned it over its pinned connection when it bootstrapped the cluster; the pin for a
    /// cluster formed from `servers` (unless `spec.serverCertificate` names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_certificate_fingerprint: Option<String>,
    /// What each namespace with a quota (`spec.quotas`) holds on this cluster, beside its
    /// quota, as a Kubernetes ResourceQuota reports `hard` and `used`. Refreshed at every sync
    /// of the cluster (`memberSyncIntervalSeconds`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<NamespaceQuotaStatus>,
    /// What the last rebalancing round saw and planned (with `spec.rebalance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceStatus>,
}

/// One server of `spec.servers` as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The server's name in `spec.servers`.
    pub name: String,
    /// Its address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Pending, Trusting, Joining, Online, Offline, Draining, Removing or Failed.
    pub phase: ServerPhase,
    /// Why it is in this phase, in one word (`TokenRejected`, `Unreachable`, `Joined`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened last, with LXD's own message when LXD refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The LXD version the server runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lxd_version: String,
    /// Its roles in the cluster (database, database-leader, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Whether the operator joined it to the cluster (or bootstrapped the cluster on it): only
    /// such members are removed when they leave `spec.servers`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub joined_by_operator: bool,
}

/// Where a server is in forming the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServerPhase {
    /// Not looked at yet.
    #[default]
    Pending,
    /// The operator is having its certificate trusted there.
    Trusting,
    /// It is joining the cluster (or bootstrapping it).
    Joining,
    /// A member of the cluster, online, with the failure domain, groups and labels asked.
    Online,
    /// A member the cluster reports offline.
    Offline,
    /// Left `spec.servers`: our containers are being moved off it.
    Draining,
    /// Drained: being removed from the cluster.
    Removing,
    /// Cannot go on until something changes; `message` says what.
    Failed,
}

/// One LXD cluster member as last seen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member name (`server_name` in LXD).
    #[schemars(regex(pattern = MEMBER_NAME_PATTERN))]
    pub name: String,
    /// The member's API address, e.g. `https://10.0.0.2:8443`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// LXD's status of the member: Online, Offline, Evacuated, Blocked, ...
    pub status: String,
    /// LXD's message about the member's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Cluster roles of the member (database, database-leader, event-hub, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The member's failure domain (`default` unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// CPU architecture, e.g. `x86_64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Cluster groups the member belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Labels of the member, read from its `user.*` member config keys (`user.` removed), for
    /// member selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What the member has in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<MemberCapacity>,
    /// What every instance on this member is limited to, ours or not (its `limits.cpu`,
    /// `limits.cpu.allowance` and `limits.memory`, with profiles applied): what placement
    /// counts as allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<MemberUsage>,
    /// What the operator's own containers on this member ask for (their `resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<MemberUsage>,
    /// What the member actually uses right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<MemberLoad>,
    /// When the operator last saw the member online (for a member offline since the operator
    /// first saw it: that first sight). A `Reschedule` grace period counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// A drain of this member in progress (`spec.drainedMembers`): how many of our containers
    /// are still on it, and why those that cannot move stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
}

/// How far the drain of one member is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainProgress {
    /// Our containers still on the member (moving ones included).
    pub remaining: u32,
    /// Of those, the ones moving now.
    pub moving: u32,
    /// Of those, the ones that cannot move now (no member can take them, or the move failed).
    pub failed: u32,
    /// Why containers stay, counted by reason, or `drained` when none is left.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Total resources of a member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberCapacity {
    /// Logical CPUs (threads).
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// Resources requested by a set of instances on a member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberUsage {
    /// CPU cores requested.
    pub cpus: f64,
    /// Memory requested, in bytes.
    pub memory_bytes: u64,
    /// Number of instances.
    pub instances: u32,
}

/// Live usage of a member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberLoad {
    /// 1-minute load average, where the LXD version reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load1: Option<f64>,
    /// 5-minute load average, where the LXD version reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load5: Option<f64>,
    /// 15-minute load average, where the LXD version reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load15: Option<f64>,
    /// Host memory in use, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// CPU used by all instances on the member, in cores, averaged since the previous sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_cpu_cores: Option<f64>,
    /// Memory used by all instances on the member, in bytes (LXD's metrics, read at most about
    /// once a minute: reading them costs the member CPU for every running instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_memory_bytes: Option<u64>,
    /// Number of instances on the member, ours or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
}
