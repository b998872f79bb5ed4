//! `LxdContainer`: one LXD container, declared.

// Every `printcolumn(...)` of kube's derive repeats `type_ = ...`, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rebalance::RebalancePolicy;
use crate::shared::{
    ClusterReference, Condition, DNS_SUBDOMAIN_PATTERN, INSTANCE_NAME_PATTERN, IntOrString,
    LabelSelector, MEMBER_NAME_PATTERN, memory_quantity_schema, positive_cpu_schema,
};

/// One LXD container: what it runs, how large it is, in which state it should be, and how the
/// operator chooses the cluster member it runs on.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lxd-operator.dev",
    version = "v1alpha1",
    kind = "LxdContainer",
    plural = "lxdcontainers",
    namespaced,
    shortname = "lxdc",
    category = "lxd",
    status = "LxdContainerStatus",
    derive = "PartialEq",
    doc = "A container on an LXD cluster, kept running (or stopped, or frozen) as declared on a member chosen by its placement.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Member", type_ = "string", json_path = ".status.member"),
    printcolumn(name = "IPv4", type_ = "string", json_path = ".status.ipv4[0]"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        priority = 1,
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        priority = 1,
        json_path = ".spec.image.alias"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LxdContainerSpec {
    /// The LxdCluster to run the container on.
    pub cluster_ref: ClusterReference,

    /// Name of the LXD instance. Defaults to a name derived from the namespace and name (with a
    /// short hash when it must be shortened to LXD's 63 characters). Set it to take over an
    /// existing instance of that name. Cannot be changed once the instance exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = INSTANCE_NAME_PATTERN))]
    pub instance_name: Option<String>,

    /// The image to create the container from, already present in the cluster's image store:
    /// an alias or a fingerprint.
    pub image: ImageSource,

    /// LXD profiles applied in order. Without this field LXD applies the `default` profile; an
    /// empty list applies none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<String>>,

    /// LXD instance configuration keys, e.g. `security.nesting: "true"` or `user.role: web`.
    /// Keys under `volatile.` and `user.lxd-operator.` belong to LXD and the operator and are
    /// refused; set `limits.cpu` and `limits.memory` through `resources` instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// LXD devices by name, each a map of device keys, e.g.
    /// `data: {type: disk, source: /srv/data, path: /data}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,

    /// CPU and memory limits of the container; placement also reserves them on the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,

    /// Create an ephemeral container: LXD deletes it when it stops. The operator then creates
    /// it again if `state` is Running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,

    /// The state to keep the container in.
    #[serde(default)]
    pub state: DesiredState,

    /// How the member to run on is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// An image in the cluster's image store. Set exactly one of `alias` and `fingerprint`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["alias"]}, {"required": ["fingerprint"]}]))]
pub struct ImageSource {
    /// Image alias, e.g. `busybox` or `debian/12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub alias: Option<String>,
    /// Image fingerprint (SHA-256, hex), or a unique prefix of at least 12 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{12,64}$"))]
    pub fingerprint: Option<String>,
}

/// Resource limits of a container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    /// CPU cores, greater than 0: a whole number sets `limits.cpu`, a fraction such as 0.5 sets
    /// `limits.cpu.allowance` to that share of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_cpu_schema")]
    pub cpu: Option<f64>,
    /// Memory limit as a Kubernetes quantity (`256Mi`, `1Gi`), set as `limits.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "memory_quantity_schema")]
    pub memory: Option<IntOrString>,
}

/// The state the operator keeps the container in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DesiredState {
    /// Started, and started again whenever it stops.
    #[default]
    Running,
    /// Created and kept stopped.
    Stopped,
    /// Running but frozen (all processes paused).
    Frozen,
}

/// How a member is chosen for the container. Without any of these fields, the cluster's default
/// policy (or the built-in `least-loaded` strategy) decides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// A built-in strategy. Set at most one of `strategy` and `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<PlacementStrategy>,
    /// Name of an LxdPlacementPolicy. Set at most one of `strategy` and `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub policy: Option<String>,
    /// Pin the container to this member. Filters such as capacity still apply: a pinned
    /// container that does not fit is Unschedulable rather than overcommitting the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = MEMBER_NAME_PATTERN))]
    pub target: Option<String>,
    /// Only members matching all of these are candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_selector: Option<MemberSelector>,
    /// Place near other LxdContainers (of this namespace) that match a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<AffinityTerm>,
    /// Place away from other LxdContainers (of this namespace) that match a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anti_affinity: Vec<AffinityTerm>,
    /// How containers matching a selector are spread over topology domains: members, failure
    /// domains, or the values of a member label such as `zone` or `rack`, as Kubernetes'
    /// `topologySpreadConstraints`. Several constraints make a spread on several levels (zones,
    /// then racks, then members); all of them must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// What to do when the member the container runs on goes offline: `Wait` for it
    /// (default), or `Reschedule` the container onto another member once the member has been
    /// offline for the grace period. A container pinned with `target` always waits.
    #[serde(default)]
    pub on_member_failure: MemberFailurePolicy,
    /// With `onMemberFailure: Reschedule`: how long, in seconds, the member must have been
    /// offline (counted from the last time the operator saw it online, so a member that flaps
    /// starts the count again) before the container is created anew elsewhere. Without it,
    /// the LxdCluster's `memberFailureGracePeriodSeconds` applies (default 300, as Kubernetes
    /// evicts pods from an unreachable node after 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86400))]
    pub member_failure_grace_period_seconds: Option<u32>,
    /// Whether the cluster's rebalancer (`spec.rebalance` of the LxdCluster) may move this
    /// container to even out the members: `Never` (default) or `Allow`. A move stops the
    /// container while LXD copies it to its new member. A container pinned with `target`
    /// never moves.
    #[serde(default, skip_serializing_if = "is_never")]
    pub rebalance: RebalancePolicy,
}

fn is_never(policy: &RebalancePolicy) -> bool {
    *policy == RebalancePolicy::Never
}

/// Built-in placement strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementStrategy {
    /// Members in turn, as LXD 3.0 placed instances (for comparison).
    RoundRobin,
    /// The member with the fewest instances, as later LXD versions place instances.
    FewestInstances,
    /// The member with the most room left, by requested resources and by live usage (default).
    LeastLoaded,
    /// The fullest member that still fits the container, leaving other members free.
    BinPack,
    /// Spread over failure domains first, then over members.
    Spread,
}

/// Selects cluster members. Every field given must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberSelector {
    /// The member must belong to at least one of these cluster groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The member must be in one of these failure domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_domains: Vec<String>,
    /// The member's labels (its `user.*` member config keys, without `user.`) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelSelector>,
}

/// A rule relating this container to other LxdContainers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffinityTerm {
    /// The LxdContainers (in this namespace) the rule is about, by label.
    pub selector: LabelSelector,
    /// What counts as "the same place": one member, or one failure domain.
    #[serde(default)]
    pub topology: Topology,
    /// Required: a member that breaks the rule is never chosen (the container stays
    /// Unschedulable instead). Preferred: such a member scores lower.
    #[serde(default)]
    pub mode: AffinityMode,
    /// Weight of a Preferred rule against the placement scores, 1 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<u32>,
}

/// The unit of placement an affinity rule is about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Topology {
    /// The same cluster member.
    #[default]
    Member,
    /// The same failure domain.
    FailureDomain,
}

/// How strictly an affinity rule is kept.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AffinityMode {
    /// A filter: never broken.
    #[default]
    Required,
    /// A score: kept where possible.
    Preferred,
}

/// A rule for spreading containers evenly over topology domains.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpreadConstraint {
    /// How unevenly matching containers may be spread: the number in the domain this container
    /// goes to, minus the smallest number in any eligible domain, at most this after placing
    /// it. At least 1.
    #[schemars(range(min = 1))]
    pub max_skew: u32,
    /// What a domain is: `member` (each cluster member), `failureDomain` (the member's LXD
    /// failure domain), or the name of a member label (a `user.<name>` member config key, e.g.
    /// `zone` for `user.zone`). Members without the label are in no domain: under
    /// `DoNotSchedule` they are no candidates, as nodes without the key are in Kubernetes.
    #[schemars(length(min = 1, max = 63), regex(pattern = TOPOLOGY_KEY_PATTERN))]
    pub topology_key: String,
    /// `DoNotSchedule` (default): a member that would break the skew is never chosen, the
    /// container stays Unschedulable instead. `ScheduleAnyway`: such members score lower.
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// The containers counted (in this namespace), by label. Without it, containers with the
    /// same labels as this one are counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// A topology key: `member`, `failureDomain`, or a member label's name.
pub const TOPOLOGY_KEY_PATTERN: &str = r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$";
/// The topology key whose domains are single members.
pub const TOPOLOGY_KEY_MEMBER: &str = "member";
/// The topology key whose domains are LXD failure domains.
pub const TOPOLOGY_KEY_FAILURE_DOMAIN: &str = "failureDomain";

/// What a topology spread constraint does when no member keeps it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WhenUnsatisfiable {
    /// Never break the constraint: the container stays Unschedulable.
    #[default]
    DoNotSchedule,
    /// Prefer members that keep it; place anyway.
    ScheduleAnyway,
}

/// What to do with a container whose member goes offline.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MemberFailurePolicy {
    /// Wait for the member to come back; the container keeps its member and its data.
    #[default]
    Wait,
    /// Create the container anew on another member, chosen by its placement policy, once its
    /// member has been offline for the grace period. The new instance has a name of its own
    /// (the usual name with `-r<incarnation>`), since LXD keeps the old name while its member
    /// is away; the root filesystem on the failed member is lost to the container. The
    /// instance left behind there is deleted as soon as the member is seen online again.
    Reschedule,
}

/// What the operator last saw of the container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LxdContainerStatus {
    /// Where the container is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ContainerPhase>,
    /// The member the container runs on (or is being created on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The LXD instance's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// The LXD project the instance lives in (`lxc list --project <it>` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// IPv4 addresses of the container's interfaces (loopback excluded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4: Vec<String>,
    /// IPv6 addresses of the container's interfaces (loopback and link-local excluded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<String>,
    /// Why the member was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementStatus>,
    /// How many times the container was created anew on another member because its member
    /// failed (absent: never). The instance name carries it as `-r<incarnation>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u32>,
    /// Instances of this container left behind on members that went offline when it was
    /// rescheduled; each is deleted when its member is seen online again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_behind: Vec<LeftBehindInstance>,
    /// A move to another member in progress (a drain), recorded before the instance is
    /// stopped so that a restarted operator finishes it.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "move")]
    pub moving: Option<MoveStatus>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Scheduled`: a member was chosen. `Ready`: the instance exists and is in the desired
    /// state. Reasons and messages say what failed, with LXD's own message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An instance of the container left on a member that failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeftBehindInstance {
    /// The LXD instance's name.
    pub instance_name: String,
    /// The member it is on.
    pub member: String,
    /// Why it was left there.
    pub reason: String,
    /// When the container was rescheduled away from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// A move of the container's instance from one member to another.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveStatus {
    /// The member the instance leaves.
    pub from: String,
    /// The member it goes to, chosen by the container's placement policy.
    pub to: String,
    /// Why it moves (for example: its member is drained).
    pub reason: String,
    /// When the move began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

/// Phases of an LxdContainer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ContainerPhase {
    /// Accepted, not placed yet.
    Pending,
    /// No member can take it now; the Scheduled condition says why.
    Unschedulable,
    /// A member was chosen; the instance is not created yet.
    Scheduled,
    /// The instance is being created.
    Creating,
    /// The instance runs.
    Running,
    /// The instance exists and is stopped.
    Stopped,
    /// The instance runs, frozen.
    Frozen,
    /// The operator cannot bring the instance to the desired state; the Ready condition says why.
    Failed,
    /// The instance is being deleted.
    Deleting,
    /// Its member is offline: what the instance does cannot be seen. The Ready condition says
    /// what the container waits for.
    Unknown,
    /// The instance is being moved to another member (a drain).
    Moving,
}

/// The placement decision recorded for a container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// The strategy or policy that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A short explanation: the winner's score and why others lost or were filtered out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub explanation: String,
    /// When the decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
}
