//! Rebalancing running containers: the LxdCluster's settings (`spec.rebalance`), what the last
//! round planned (`status.rebalance`), a container's opt-in (`spec.placement.rebalance`), and
//! the annotations a move request is written in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on an LxdContainer: the member the rebalancer asks it to move to. The container's
/// own reconciler carries the move out, as it moves a container off a drained member (one
/// move slot of `maxConcurrentMoves`, the set's `maxUnavailable`). Written by the operator.
pub const MOVE_TO_ANNOTATION: &str = "lxd-operator.dev/rebalance-to";
/// Annotation on an LxdContainer: when the rebalancer last asked it to move (RFC 3339); its
/// cooldown counts from here. Written by the operator.
pub const MOVE_REQUESTED_AT_ANNOTATION: &str = "lxd-operator.dev/rebalance-requested-at";

/// Whether the rebalancer plans, carries out, or leaves alone.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebalanceMode {
    /// No rebalancing (default).
    #[default]
    Off,
    /// Plan every round and write the plan into `status.rebalance`, moving nothing.
    DryRun,
    /// Plan every round and carry the plan out: each container planned moves (stopped, moved
    /// within LXD, started again), with Events and metrics.
    On,
}

/// When and how far the operator moves running containers to even out the members'
/// allocation, as Kubernetes' descheduler does for pods. Only containers that allow it
/// (`spec.placement.rebalance: Allow`) move, never a pinned one (`spec.placement.target`); a
/// set's `maxUnavailable` holds during rebalancing as during a drain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSettings {
    /// `Off` (default), `DryRun` or `On`.
    #[serde(default)]
    pub mode: RebalanceMode,
    /// Seconds between two rounds. A round waits, besides, until the moves of the previous one
    /// are over.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub interval_seconds: u32,
    /// The spread of allocation, in percent, above which the cluster counts as unbalanced: the
    /// memory allocated on each member that takes containers (online, neither cordoned nor
    /// drained; an instance without a memory limit counts as 256 MiB, as placement's scores
    /// count it), as (max - min) / mean. A round that finds the spread above this plans moves
    /// until it is at most this less `minImprovementPercent`.
    /// A container whose member breaks one of its `DoNotSchedule` topology spread constraints
    /// (after members came or went) is moved whatever the spread.
    #[serde(default = "default_threshold_percent")]
    #[schemars(range(min = 1, max = 1000))]
    pub spread_threshold_percent: u32,
    /// A plan is carried out only when it lowers the spread by more than this many percentage
    /// points, so that the cluster is not shuffled for a small gain.
    #[serde(default = "default_margin_percent")]
    #[schemars(range(max = 100))]
    pub min_improvement_percent: u32,
    /// At most this many moves per round.
    #[serde(default = "default_max_moves_per_round")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_moves_per_round: u32,
    /// Seconds a container is left where it is after the rebalancer moved it.
    #[serde(default = "default_cooldown_seconds")]
    #[schemars(range(max = 604800))]
    pub cooldown_seconds: u32,
}

impl Default for RebalanceSettings {
    fn default() -> Self {
        RebalanceSettings {
            mode: RebalanceMode::Off,
            interval_seconds: default_interval_seconds(),
            spread_threshold_percent: default_threshold_percent(),
            min_improvement_percent: default_margin_percent(),
            max_moves_per_round: default_max_moves_per_round(),
            cooldown_seconds: default_cooldown_seconds(),
        }
    }
}

fn default_interval_seconds() -> u32 {
    60
}

fn default_threshold_percent() -> u32 {
    10
}

fn default_margin_percent() -> u32 {
    2
}

fn default_max_moves_per_round() -> u32 {
    5
}

fn default_cooldown_seconds() -> u32 {
    600
}

/// Whether the rebalancer may move a container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebalancePolicy {
    /// Never moved by the rebalancer (default).
    #[default]
    Never,
    /// May be moved to even out the members: the container is stopped for the move (a cold
    /// migration, which copies its root filesystem) and started again on its new member.
    Allow,
}

/// What the last rebalancing round saw and planned.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// The mode the round ran in.
    pub mode: RebalanceMode,
    /// When the last round ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_round_time: Option<Time>,
    /// Rounds that planned since rebalancing was turned on (those that found nothing to do
    /// included; a look while the last round's moves are under way is no round).
    #[serde(default)]
    pub rounds: u64,
    /// Moves asked for in `On` mode, in total.
    #[serde(default)]
    pub moves_requested: u64,
    /// The spread, (max - min) / mean of the memory allocated per member, when the round ran.
    #[serde(default)]
    pub spread: f64,
    /// The spread the plan leads to.
    #[serde(default)]
    pub planned_spread: f64,
    /// The round's plan (in `DryRun`, what would move; in `On`, what was asked to move).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<PlannedMove>,
    /// What the round decided, in words (balanced, waiting for moves, planned N moves, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One move of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedMove {
    /// The container's namespace.
    pub namespace: String,
    /// The container's name.
    pub name: String,
    /// The member it is on.
    pub from: String,
    /// The member it goes to.
    pub to: String,
    /// Why: `spread`, or the topology spread constraint it breaks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
