//! The operator's Prometheus metrics (prefix `lxd_operator_`).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::lxd::client::RequestObserver;

/// Labels of a reconcile.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `LxdCluster` or `LxdContainer`.
    pub kind: String,
    /// `ok`, or the error's label.
    pub result: String,
}

/// Labels of a kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `LxdCluster` or `LxdContainer`.
    pub kind: String,
}

/// Labels of a placement decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlacementLabels {
    /// The strategy or policy.
    pub strategy: String,
    /// `placed` or `unschedulable`.
    pub outcome: String,
}

/// Labels of an LXD API request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LxdRequestLabels {
    /// The endpoint that answered (or failed).
    pub endpoint: String,
    /// HTTP method.
    pub method: String,
    /// What the request is for: `create`, `state`, `update`, `delete`, `wait`, `instance`,
    /// `instances`, `members`, `resources`, `metrics`, `operation`, `other`.
    pub call: String,
    /// HTTP status, or `error`.
    pub status: String,
}

/// Labels of a stage of a new container's first rollout.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `placed`, `created`, `started` or `ready`.
    pub stage: String,
}

/// Labels of a wait inside a placement decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlacementWaitLabels {
    /// `figures` (member figures from LXD), `containers` (the namespace's containers from the
    /// API), `gathering` (the burst's gathering window), `larger_first` (larger decisions of
    /// the burst first), `decision_lock` (the cluster's decisions one at a time), `webhook` (the
    /// policy's webhook answering, outside the lock).
    pub wait: String,
}

/// Labels naming a cluster.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// The LxdCluster.
    pub cluster: String,
}

/// Labels of what is allocated on a member's host.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberAllocationLabels {
    /// The LxdCluster.
    pub cluster: String,
    /// The member.
    pub member: String,
    /// `lxd` (what LXD's instances are limited to) or `pods` (what the Pods on the member's
    /// Kubernetes Node request).
    pub by: String,
}

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by kind and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration by kind, seconds.
    pub reconcile_duration: Family<KindLabels, Histogram>,
    /// Reconciles running now, by kind (the work queue's busy part).
    pub reconciles_in_flight: Family<KindLabels, Gauge>,
    /// Placement decisions by strategy and outcome.
    pub placements: Family<PlacementLabels, Counter>,
    /// Placement decision duration, seconds.
    pub placement_duration: Family<KindLabels, Histogram>,
    /// LXD API requests by endpoint, method and status.
    pub lxd_requests: Family<LxdRequestLabels, Counter>,
    /// LXD API request latency by endpoint, seconds.
    pub lxd_request_duration: Family<LxdRequestLabels, Histogram>,
    /// Seconds from the first reconcile of a new LxdContainer to each stage of its first
    /// rollout.
    pub container_stages: Family<StageLabels, Histogram>,
    /// Seconds a placement decision waited, by what it waited for.
    pub placement_waits: Family<PlacementWaitLabels, Histogram>,
    /// Seconds a create waited for its turn on its member.
    pub create_turn_waits: Histogram,
    /// Event stream (re)connections by cluster.
    pub event_stream_connects: Family<ClusterLabels, Counter>,
    /// Members online by cluster.
    pub members_online: Family<ClusterLabels, Gauge>,
    /// 1 while this process is the leader (or runs without leader election), else 0.
    pub leader: Gauge,
    /// Containers created anew elsewhere because their member failed, by cluster.
    pub reschedules: Family<ClusterLabels, Counter>,
    /// Moves of containers between members (drains), by cluster and outcome.
    pub moves: Family<MoveLabels, Counter>,
    /// Seconds a move took, from stopping the instance to running it on its new member.
    pub move_duration: Histogram,
    /// What each namespace with a quota holds, by cluster, namespace and resource.
    pub quota_used: Family<QuotaLabels, Gauge<f64, AtomicU64>>,
    /// Each namespace's quota, by cluster, namespace and resource.
    pub quota_hard: Family<QuotaLabels, Gauge<f64, AtomicU64>>,
    /// CPU cores allocated on a member's host, by LXD and by Pods.
    pub member_allocated_cpu: Family<MemberAllocationLabels, Gauge<f64, AtomicU64>>,
    /// Memory bytes allocated on a member's host, by LXD and by Pods.
    pub member_allocated_memory: Family<MemberAllocationLabels, Gauge<f64, AtomicU64>>,
    /// The spread of allocation the last rebalancing round saw, by cluster.
    pub rebalance_spread: Family<ClusterLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Moves the rebalancer planned, by cluster and mode (`DryRun`: planned only, `On`: asked).
    pub rebalance_moves: Family<RebalanceLabels, Counter>,
}

/// Labels of a namespace's quota figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// The LxdCluster.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// `containers`, `cpu` (cores) or `memory` (bytes).
    pub resource: String,
}

/// Labels of the rebalancer's moves: the cluster, and the mode they were planned in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RebalanceLabels {
    /// The LxdCluster.
    pub cluster: String,
    /// `DryRun` or `On`.
    pub mode: String,
}

/// Labels of a move: its cluster, and `moved` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MoveLabels {
    /// The LxdCluster.
    pub cluster: String,
    /// `moved` or `failed`.
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 10 ms to about 5 minutes: a stage of a rollout of hundreds of containers.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lxd_operator");
        let reconciles = Family::default();
        let reconcile_duration =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let reconciles_in_flight = Family::default();
        let placements = Family::default();
        let placement_duration =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let lxd_requests = Family::default();
        let lxd_request_duration =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let container_stages = Family::new_with_constructor(stage_histogram as fn() -> Histogram);
        let placement_waits = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let create_turn_waits = stage_histogram();
        let event_stream_connects = Family::default();
        let members_online = Family::default();
        let leader = Gauge::default();
        let reschedules = Family::default();
        let moves = Family::default();
        let move_duration = stage_histogram();
        let member_allocated_cpu = Family::default();
        let member_allocated_memory = Family::default();
        registry.register(
            "member_allocated_cpu_cores",
            "CPU cores allocated on a member's host: by lxd (instance limits) and by pods (requests of the Pods on its Kubernetes Node)",
            member_allocated_cpu.clone(),
        );
        registry.register(
            "member_allocated_memory_bytes",
            "Memory allocated on a member's host: by lxd (instance limits) and by pods (requests of the Pods on its Kubernetes Node)",
            member_allocated_memory.clone(),
        );
        let rebalance_spread = Family::default();
        let rebalance_moves = Family::default();
        registry.register(
            "rebalance_spread",
            "Spread of the memory allocated per member, (max - min) / mean, at the last rebalancing round",
            rebalance_spread.clone(),
        );
        registry.register(
            "rebalance_moves",
            "Moves the rebalancer planned, by mode (DryRun: planned only; On: asked of the containers)",
            rebalance_moves.clone(),
        );
        registry.register(
            "reschedules",
            "Containers created anew on another member because theirs failed",
            reschedules.clone(),
        );
        registry.register(
            "moves",
            "Moves of containers between members (drains), by outcome",
            moves.clone(),
        );
        registry.register(
            "move_duration_seconds",
            "Seconds a move took, from stopping the instance to running it on its new member",
            move_duration.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            reconciles_in_flight.clone(),
        );
        registry.register(
            "placement_decisions",
            "Placement decisions by strategy and outcome",
            placements.clone(),
        );
        registry.register(
            "placement_duration_seconds",
            "Placement decision duration",
            placement_duration.clone(),
        );
        registry.register(
            "lxd_requests",
            "LXD API requests by endpoint, method, call and status",
            lxd_requests.clone(),
        );
        registry.register(
            "lxd_request_duration_seconds",
            "LXD API request latency",
            lxd_request_duration.clone(),
        );
        registry.register(
            "container_stage_seconds",
            "Seconds from the first reconcile of a new LxdContainer to each stage of its first rollout",
            container_stages.clone(),
        );
        registry.register(
            "placement_wait_seconds",
            "Seconds a placement decision waited, by what it waited for",
            placement_waits.clone(),
        );
        registry.register(
            "lxd_create_turn_wait_seconds",
            "Seconds a create waited for its turn on its member",
            create_turn_waits.clone(),
        );
        registry.register(
            "lxd_event_stream_connects",
            "LXD event stream (re)connections",
            event_stream_connects.clone(),
        );
        registry.register(
            "lxd_members_online",
            "Members online by cluster",
            members_online.clone(),
        );
        let quota_used = Family::default();
        registry.register(
            "quota_used",
            "What a namespace's LxdContainers hold on a cluster (containers, cpu cores, memory bytes)",
            quota_used.clone(),
        );
        let quota_hard = Family::default();
        registry.register(
            "quota_hard",
            "A namespace's quota on a cluster (containers, cpu cores, memory bytes)",
            quota_hard.clone(),
        );
        registry.register(
            "leader",
            "1 while this process reconciles (leader)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            reconciles_in_flight,
            placements,
            placement_duration,
            lxd_requests,
            lxd_request_duration,
            container_stages,
            placement_waits,
            create_turn_waits,
            event_stream_connects,
            members_online,
            leader,
            reschedules,
            moves,
            move_duration,
            quota_used,
            quota_hard,
            member_allocated_cpu,
            member_allocated_memory,
            rebalance_spread,
            rebalance_moves,
        }
    }

    /// Sets what is allocated on `member` of `cluster` `by` `lxd` or `pods`.
    pub fn observe_member_allocation(
        &self,
        cluster: &str,
        member: &str,
        by: &str,
        cpu: f64,
        memory_bytes: f64,
    ) {
        let labels = MemberAllocationLabels {
            cluster: cluster.to_owned(),
            member: member.to_owned(),
            by: by.to_owned(),
        };
        self.member_allocated_cpu.get_or_create(&labels).set(cpu);
        self.member_allocated_memory
            .get_or_create(&labels)
            .set(memory_bytes);
    }

    /// Records a rebalancing round of `cluster`: the spread it saw, the moves it planned.
    pub fn observe_rebalance(&self, cluster: &str, mode: &str, spread: f64, moves: usize) {
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        self.rebalance_spread.get_or_create(&labels).set(spread);
        self.rebalance_moves
            .get_or_create(&RebalanceLabels {
                cluster: cluster.to_owned(),
                mode: mode.to_owned(),
            })
            .inc_by(moves as u64);
    }

    /// Counts a container rescheduled off a failed member of `cluster`.
    pub fn observe_reschedule(&self, cluster: &str) {
        self.reschedules
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_owned(),
            })
            .inc();
    }

    /// Counts a move on `cluster` that ended (`moved` or not) after `duration`.
    pub fn observe_move(&self, cluster: &str, moved: bool, duration: Duration) {
        self.moves
            .get_or_create(&MoveLabels {
                cluster: cluster.to_owned(),
                outcome: if moved { "moved" } else { "failed" }.to_owned(),
            })
            .inc();
        if moved {
            self.move_duration.observe(duration.as_secs_f64());
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts one reconcile of `kind` that took `duration` and ended in `result`.
    pub fn observe_reconcile(&self, kind: &str, result: &str, duration: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A new container reached `stage` of its first rollout `since` its first reconcile.
    pub fn observe_stage(&self, stage: &str, since: std::time::Instant) {
        self.container_stages
            .get_or_create(&StageLabels {
                stage: stage.to_owned(),
            })
            .observe(since.elapsed().as_secs_f64());
    }

    /// A placement decision waited `waited` for `what` (see [`PlacementWaitLabels`]).
    pub fn observe_placement_wait(&self, what: &str, waited: Duration) {
        self.placement_waits
            .get_or_create(&PlacementWaitLabels {
                wait: what.to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Counts one placement of a container by the policy `policy` that took `duration`.
    pub fn observe_placement(&self, policy: &str, placed: bool, duration: Duration) {
        self.placements
            .get_or_create(&PlacementLabels {
                strategy: policy.to_owned(),
                outcome: if placed { "placed" } else { "unschedulable" }.to_owned(),
            })
            .inc();
        self.placement_duration
            .get_or_create(&KindLabels {
                kind: "LxdContainer".to_owned(),
            })
            .observe(duration.as_secs_f64());
    }
}

impl RequestObserver for Metrics {
    fn observe(
        &self,
        endpoint: &str,
        method: &str,
        call: &str,
        status: Option<u16>,
        duration: Duration,
    ) {
        let labels = LxdRequestLabels {
            endpoint: endpoint.to_owned(),
            method: method.to_owned(),
            call: call.to_owned(),
            status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
        };
        self.lxd_requests.get_or_create(&labels).inc();
        self.lxd_request_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    fn observe_create_turn(&self, waited: Duration) {
        self.create_turn_waits.observe(waited.as_secs_f64());
    }
}
