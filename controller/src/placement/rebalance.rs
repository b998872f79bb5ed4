//! Rebalancing: which running containers to move where, so that the members' allocation evens
//! out, planned as a whole (no I/O: a snapshot and the movable containers in, a plan out).
//!
//! The figure is the spread of allocation, (max - min) / mean of the memory allocated per
//! member, over the members that take containers (online, neither cordoned nor drained), with
//! an instance without a memory limit counted as placement's scores count it. It is the figure
//! the placement tests and `hack/bench` measure placement's quality by.
//!
//! A plan first repairs containers whose member breaks one of their `DoNotSchedule` topology
//! spread constraints (members came or went since they were placed), then, when the spread is
//! above the threshold, moves one container at a time greedily until it is at most the
//! threshold less the margin (so that a plan gains more than the margin, and a few arrivals do
//! not make the next round unbalanced again): from the most allocated
//! member that has a container that may move, the container and destination that lower the
//! sum of squared allocations most (a move from a fuller to an emptier member that does not
//! overshoot lowers it; the spread itself may need several such moves before it drops, when
//! several members tie at the top). Each destination must pass the filters placement applies
//! to that container (capacity, affinity, topology spread, member selector, cordon, ...), in
//! the snapshot as the plan's earlier moves leave it. A container moves at most once per plan,
//! never within its cooldown, and a set's children no more than its disruption budget allows.
//! The spread moves are kept only when together they lower the spread by more than the
//! margin: no shuffling for a small gain.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::model::{Request, Resources, Snapshot};
use super::plugins::Reason;
use super::policy::Policy;

/// What the rebalancer aims at and may do, per round.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The spread above which the cluster is unbalanced, and which a plan aims to reach.
    pub threshold: f64,
    /// A plan's spread moves must lower the spread by more than this.
    pub min_improvement: f64,
    /// At most this many moves in a plan.
    pub max_moves: usize,
    /// A container is not moved again within this time of its last move.
    pub cooldown: Duration,
}

/// A running container the rebalancer may move.
#[derive(Debug, Clone)]
pub struct Movable {
    /// The container as placement sees it.
    pub request: Request,
    /// The member it is on.
    pub member: String,
    /// Which of the plan's policies places it.
    pub policy: usize,
    /// Its disruption budget's group (its set), if it has one.
    pub budget_group: Option<String>,
    /// How long ago the rebalancer last moved it, if ever.
    pub since_last_move: Option<Duration>,
}

/// Why a container is moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveReason {
    /// To lower the spread of allocation.
    Spread,
    /// Its member breaks a topology spread constraint (the filter's reason).
    TopologySpread(String),
}

impl std::fmt::Display for MoveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveReason::Spread => write!(f, "spread"),
            MoveReason::TopologySpread(why) => write!(f, "{why}"),
        }
    }
}

/// One move of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The container's index among the movables given.
    pub container: usize,
    /// The member it leaves.
    pub from: String,
    /// The member it goes to.
    pub to: String,
    /// Why.
    pub reason: MoveReason,
}

/// A round's plan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The spread now.
    pub spread_before: f64,
    /// The spread once the moves are made.
    pub spread_after: f64,
    /// The moves, in the order planned.
    pub moves: Vec<Move>,
}

/// Sources tried per greedy step, most allocated first: when the fullest members have nothing
/// that may move (pinned, cooling down, no member fits), the next ones are looked at.
const SOURCES_PER_STEP: usize = 8;

/// The spread of allocation of the members that take containers: (max - min) / mean of their
/// memory allocated; 0 when there are fewer than two or nothing is allocated.
pub fn spread(snapshot: &Snapshot) -> f64 {
    let values: Vec<f64> = snapshot
        .members()
        .iter()
        .filter(|m| takes_containers(m))
        .map(|m| m.scoring_allocated().memory)
        .collect();
    spread_of(&values)
}

/// (max - min) / mean of `values`; 0 for fewer than two values or a mean of 0.
pub fn spread_of(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    if mean <= 0.0 { 0.0 } else { (max - min) / mean }
}

fn takes_containers(member: &super::model::Member) -> bool {
    member.status == "Online" && !member.cordoned
}

/// Plans the round. `policies`: the policies the movables name by index; `budgets`: how many
/// more children of each budget group may be disrupted now (a group not listed: none).
pub fn plan(
    snapshot: &Snapshot,
    movables: &[Movable],
    policies: &[Policy],
    budgets: &HashMap<String, usize>,
    settings: &Settings,
) -> Plan {
    let mut planner = Planner {
        snapshot: snapshot.clone(),
        movables,
        policies,
        budgets: budgets.clone(),
        cooldown: settings.cooldown,
        moved: HashSet::new(),
        moves: Vec::new(),
    };
    let spread_before = spread(snapshot);
    planner.repair_topology_spread(settings.max_moves);
    let repairs = planner.moves.len();
    let spread_repaired = spread(&planner.snapshot);
    // Beyond the threshold the plan aims below it by the margin: a plan that stopped just
    // under the threshold would gain less than the margin and be dropped, and the next round
    // starts from a spread with room for arrivals before it counts as unbalanced again.
    let target = (settings.threshold - settings.min_improvement).max(0.0);
    let unbalanced = |s: f64| s > target + 1e-9;
    if spread_repaired > settings.threshold + 1e-9 {
        while planner.moves.len() < settings.max_moves && unbalanced(spread(&planner.snapshot)) {
            let Some(step) = planner.best_spread_move() else {
                break;
            };
            planner.apply(step, MoveReason::Spread);
        }
    }
    let mut spread_after = spread(&planner.snapshot);
    if planner.moves.len() > repairs && spread_repaired - spread_after <= settings.min_improvement {
        planner.moves.truncate(repairs);
        spread_after = spread_repaired;
    }
    Plan {
        spread_before,
        spread_after,
        moves: planner.moves,
    }
}

/// A candidate move: the movable's index, and the destination's member index.
#[derive(Debug, Clone, Copy)]
struct Step {
    container: usize,
    from: usize,
    to: usize,
}

struct Planner<'a> {
    snapshot: Snapshot,
    movables: &'a [Movable],
    policies: &'a [Policy],
    budgets: HashMap<String, usize>,
    cooldown: Duration,
    moved: HashSet<usize>,
    moves: Vec<Move>,
}

impl Planner<'_> {
    /// Whether the container may be moved now by this plan.
    fn may_move(&self, index: usize) -> bool {
        let Some(movable) = self.movables.get(index) else {
            return false;
        };
        if self.moved.contains(&index) || movable.request.placement.target.is_some() {
            return false;
        }
        if movable
            .since_last_move
            .is_some_and(|since| since < self.cooldown)
        {
            return false;
        }
        match &movable.budget_group {
            Some(group) => self.budgets.get(group).is_some_and(|left| *left > 0),
            None => true,
        }
    }

    /// Where the container could go now: the members its policy's filters pass, with it taken
    /// off its member first (so that it does not count against itself), and whether its own
    /// member is left out by a topology spread constraint (the reason).
    fn destinations(&mut self, index: usize) -> (Vec<usize>, Option<String>) {
        let Some(movable) = self.movables.get(index) else {
            return (Vec::new(), None);
        };
        let Some(policy) = self.policies.get(movable.policy) else {
            return (Vec::new(), None);
        };
        let Some(from) = self.snapshot.member_index(&movable.member) else {
            return (Vec::new(), None);
        };
        lift(&mut self.snapshot, from, &movable.request);
        let (passed, skewed) = {
            let evaluation = super::evaluate(policy, &movable.request, &self.snapshot);
            let passed: Vec<usize> = evaluation.candidates.iter().map(|c| c.index).collect();
            let skewed = evaluation
                .filtered
                .iter()
                .find(|(at, reason)| *at == from && matches!(reason, Reason::Skew(_)))
                .map(|(_, reason)| reason.text(&movable.request, &self.snapshot).into_owned());
            (passed, skewed)
        };
        self.snapshot.land(&movable.member, &movable.request);
        (passed, skewed)
    }

    /// Moves off members that break a `DoNotSchedule` topology spread constraint, to the
    /// member the container's policy would choose.
    fn repair_topology_spread(&mut self, max_moves: usize) {
        for index in 0..self.movables.len() {
            if self.moves.len() >= max_moves {
                return;
            }
            let Some(movable) = self.movables.get(index) else {
                continue;
            };
            let constrained = movable
                .request
                .placement
                .topology_spread_constraints
                .iter()
                .any(|c| {
                    c.when_unsatisfiable
                        == lxd_operator_crds::container::WhenUnsatisfiable::DoNotSchedule
                });
            if !constrained || !self.may_move(index) {
                continue;
            }
            let Some(from) = self.snapshot.member_index(&movable.member) else {
                continue;
            };
            let (passed, skewed) = self.destinations(index);
            let Some(why) = skewed else {
                continue;
            };
            let Some(policy) = self.policies.get(movable.policy) else {
                continue;
            };
            // The policy's own choice among the members that pass, as placement would make it.
            lift(&mut self.snapshot, from, &movable.request);
            let chosen = super::decide(policy, &movable.request, &self.snapshot, 0)
                .ok()
                .and_then(|d| self.snapshot.member_index(&d.member));
            self.snapshot.land(&movable.member, &movable.request);
            if let Some(to) = chosen.filter(|to| *to != from && passed.contains(to)) {
                self.apply(
                    Step {
                        container: index,
                        from,
                        to,
                    },
                    MoveReason::TopologySpread(why),
                );
            }
        }
    }

    /// The move that lowers the sum of squared allocations most, from the fullest member with
    /// a container that may go somewhere emptier.
    fn best_spread_move(&mut self) -> Option<Step> {
        let allocation: Vec<f64> = self
            .snapshot
            .members()
            .iter()
            .map(|m| m.scoring_allocated().memory)
            .collect();
        let eligible: Vec<bool> = self
            .snapshot
            .members()
            .iter()
            .map(takes_containers)
            .collect();
        let mean = {
            let taking: Vec<f64> = allocation
                .iter()
                .zip(&eligible)
                .filter(|(_, e)| **e)
                .map(|(a, _)| *a)
                .collect();
            taking.iter().sum::<f64>() / taking.len().max(1) as f64
        };
        let mut sources: Vec<usize> = (0..allocation.len())
            .filter(|i| eligible[*i] && allocation[*i] > mean)
            .collect();
        sources.sort_by(|a, b| allocation[*b].total_cmp(&allocation[*a]).then(a.cmp(b)));
        let mut on_member: HashMap<usize, Vec<usize>> = HashMap::new();
        for (index, movable) in self.movables.iter().enumerate() {
            if let Some(member) = self.current_member(index, movable) {
                on_member.entry(member).or_default().push(index);
            }
        }
        let emptiest = (0..allocation.len())
            .filter(|i| eligible[*i])
            .map(|i| allocation[i])
            .fold(f64::MAX, f64::min);
        // The change of the sum of squares a move of `size` from `from` to `to` makes:
        // (s - r)^2 + (t + r)^2 - s^2 - t^2.
        let change = |size: f64, from: usize, to_allocation: f64| {
            2.0 * size * (to_allocation - allocation[from] + size)
        };
        for from in sources.into_iter().take(SOURCES_PER_STEP) {
            // Each container's change were it to go to the emptiest member is a bound on what
            // it can do: the filters are evaluated in the order of the bounds, and no further
            // than a bound that cannot beat the best move found.
            let mut bounded: Vec<(f64, usize)> = on_member
                .get(&from)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|index| self.may_move(**index))
                .map(|&index| {
                    let size = memory_counted(&self.movables[index].request.resources);
                    (change(size, from, emptiest), index)
                })
                .filter(|(bound, _)| *bound < -1e-6)
                .collect();
            bounded.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut best: Option<(f64, Step)> = None;
            for (bound, index) in bounded {
                if best.is_some_and(|(found, _)| found <= bound) {
                    break;
                }
                let size = memory_counted(&self.movables[index].request.resources);
                let (passed, _) = self.destinations(index);
                let Some(to) = passed
                    .into_iter()
                    .filter(|to| *to != from && eligible[*to])
                    .min_by(|a, b| allocation[*a].total_cmp(&allocation[*b]).then(a.cmp(b)))
                else {
                    continue;
                };
                let change = change(size, from, allocation[to]);
                if change < -1e-6 && best.is_none_or(|(found, _)| change < found) {
                    best = Some((
                        change,
                        Step {
                            container: index,
                            from,
                            to,
                        },
                    ));
                }
            }
            if let Some((_, step)) = best {
                return Some(step);
            }
        }
        None
    }

    /// The member the container is on in the plan so far (where an earlier move took it).
    fn current_member(&self, index: usize, movable: &Movable) -> Option<usize> {
        if self.moved.contains(&index) {
            return None;
        }
        self.snapshot.member_index(&movable.member)
    }

    fn apply(&mut self, step: Step, reason: MoveReason) {
        let Some(movable) = self.movables.get(step.container) else {
            return;
        };
        let names: Vec<String> = [step.from, step.to]
            .iter()
            .map(|i| {
                self.snapshot
                    .members()
                    .get(*i)
                    .map(|m| m.name.clone())
                    .unwrap_or_default()
            })
            .collect();
        lift(&mut self.snapshot, step.from, &movable.request);
        self.snapshot.land(&names[1], &movable.request);
        self.moved.insert(step.container);
        if let Some(group) = &movable.budget_group
            && let Some(left) = self.budgets.get_mut(group)
        {
            *left = left.saturating_sub(1);
        }
        self.moves.push(Move {
            container: step.container,
            from: names[0].clone(),
            to: names[1].clone(),
            reason,
        });
    }
}

/// What the spread counts of a container: its memory, or placement's scoring default.
fn memory_counted(resources: &Resources) -> f64 {
    resources.or_scoring_default().memory
}

/// Takes `request` off member `from` in `snapshot`: its allocation freed, and it no longer
/// counted there for affinity and spreading (it stays known, on no member).
fn lift(snapshot: &mut Snapshot, from: usize, request: &Request) {
    if let Some(member) = snapshot.members_mut().get_mut(from) {
        member.allocated.cpu = (member.allocated.cpu - request.resources.cpu).max(0.0);
        member.allocated.memory = (member.allocated.memory - request.resources.memory).max(0.0);
        member.instances = member.instances.saturating_sub(1);
        member.unlimited.0 = member
            .unlimited
            .0
            .saturating_sub(u32::from(request.resources.cpu <= 0.0));
        member.unlimited.1 = member
            .unlimited
            .1
            .saturating_sub(u32::from(request.resources.memory <= 0.0));
    }
    snapshot.add_placed(super::model::Placed {
        namespace: request.namespace.clone(),
        name: request.name.clone(),
        labels: request.labels.clone(),
        member: String::new(),
    });
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::{PlacementStrategy, WhenUnsatisfiable};

    use super::super::plugins::testing::{gib, member, request, spread_over};
    use super::super::policy::strategy;
    use super::*;

    fn settings() -> Settings {
        Settings {
            threshold: 0.10,
            min_improvement: 0.02,
            max_moves: 10,
            cooldown: Duration::from_secs(600),
        }
    }

    /// The plan with the default settings, every container under least-loaded, no set budgets.
    fn least_loaded_plan(snapshot: &Snapshot, movables: &[Movable]) -> Plan {
        let policies = [strategy(PlacementStrategy::LeastLoaded)];
        plan(snapshot, movables, &policies, &HashMap::new(), &settings())
    }

    /// `counts[i]` containers of 1 GiB on member `node{i+1}`, every one movable.
    fn cluster(counts: &[usize]) -> (Snapshot, Vec<Movable>) {
        let members = (0..counts.len())
            .map(|i| member(&format!("node{}", i + 1), "default", 32.0, 64.0))
            .collect();
        let mut snapshot = Snapshot::new(members);
        let mut movables = Vec::new();
        for (i, count) in counts.iter().enumerate() {
            for n in 0..*count {
                let mut wanted = request(0.5, 1.0);
                wanted.name = format!("c{}-{n}", i + 1);
                wanted.labels = [("app".to_owned(), "web".to_owned())].into();
                let on = format!("node{}", i + 1);
                snapshot.land(&on, &wanted);
                movables.push(Movable {
                    request: wanted,
                    member: on,
                    policy: 0,
                    budget_group: None,
                    since_last_move: None,
                });
            }
        }
        (snapshot, movables)
    }

    fn carry_out(snapshot: &Snapshot, movables: &mut [Movable], plan: &Plan) -> Snapshot {
        let mut after = snapshot.clone();
        for moved in &plan.moves {
            let movable = &mut movables[moved.container];
            let from = after.member_index(&moved.from).unwrap();
            lift(&mut after, from, &movable.request);
            after.land(&moved.to, &movable.request);
            movable.member = moved.to.clone();
            movable.since_last_move = Some(Duration::ZERO);
        }
        after
    }

    #[test]
    fn twelve_containers_on_two_of_three_members_even_out_in_four_moves_and_then_stay() {
        let (snapshot, mut movables) = cluster(&[6, 6, 0]);
        let plan = least_loaded_plan(&snapshot, &movables);
        assert!((plan.spread_before - 1.5).abs() < 1e-9, "{plan:?}");
        assert_eq!(plan.moves.len(), 4, "{plan:?}");
        assert!(plan.moves.iter().all(|m| m.to == "node3"), "{plan:?}");
        assert_eq!(plan.spread_after, 0.0);
        let after = carry_out(&snapshot, &mut movables, &plan);
        assert_eq!(spread(&after), 0.0);
        // The next round, and the ones after the cooldown, find nothing to do.
        let again = least_loaded_plan(&after, &movables);
        assert!(again.moves.is_empty(), "{again:?}");
        movables.iter_mut().for_each(|m| m.since_last_move = None);
        let later = least_loaded_plan(&after, &movables);
        assert!(later.moves.is_empty(), "{later:?}");
    }

    #[test]
    fn pinned_cooling_and_over_budget_containers_stay_and_a_set_loses_one_child_per_unit() {
        let (snapshot, mut movables) = cluster(&[6, 6, 0]);
        for movable in movables.iter_mut().filter(|m| m.member == "node1") {
            movable.request.placement.target = Some("node1".to_owned());
        }
        for movable in movables.iter_mut().filter(|m| m.member == "node2").take(3) {
            movable.since_last_move = Some(Duration::from_secs(60));
        }
        for movable in movables.iter_mut().filter(|m| m.member == "node2").skip(3) {
            movable.budget_group = Some("web".to_owned());
        }
        let policies = [strategy(PlacementStrategy::LeastLoaded)];
        let budgets = HashMap::from([("web".to_owned(), 1)]);
        let plan = plan(&snapshot, &movables, &policies, &budgets, &settings());
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        let moved = &movables[plan.moves[0].container];
        assert_eq!(moved.budget_group.as_deref(), Some("web"));
        assert_eq!(
            (moved.member.as_str(), plan.moves[0].to.as_str()),
            ("node2", "node3")
        );
    }

    #[test]
    fn a_gain_within_the_margin_moves_nothing() {
        // 10, 10 and 9 GiB: 1 GiB of spread over a mean of 9.67 is 0.103, just above the
        // threshold; no single move lowers it.
        let (snapshot, movables) = cluster(&[10, 10, 9]);
        let plan = least_loaded_plan(&snapshot, &movables);
        assert!(plan.spread_before > 0.10);
        assert!(plan.moves.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_destination_must_pass_the_filters_placement_would_apply() {
        let (mut snapshot, movables) = cluster(&[6, 6, 0]);
        // node3 has no memory left for 1 GiB.
        snapshot.members_mut()[2].allocated.memory = gib(63.5);
        let plan = least_loaded_plan(&snapshot, &movables);
        assert!(plan.moves.iter().all(|m| m.to != "node3"), "{plan:?}");
        // A cordoned member takes nothing either, and its emptiness does not count.
        let (mut snapshot, movables) = cluster(&[6, 6, 0]);
        snapshot.members_mut()[2].cordoned = true;
        let plan = least_loaded_plan(&snapshot, &movables);
        assert!(
            plan.moves.is_empty() && plan.spread_before == 0.0,
            "{plan:?}"
        );
    }

    #[test]
    fn a_topology_spread_broken_by_a_new_member_is_repaired_whatever_the_spread() {
        // Four web containers spread over two members with maxSkew 1, then node3 joins: node1
        // and node2 hold 2 against node3's 0.
        let (snapshot, mut movables) = cluster(&[2, 2, 0]);
        for movable in &mut movables {
            movable.request.placement.topology_spread_constraints =
                vec![spread_over("member", WhenUnsatisfiable::DoNotSchedule)];
        }
        let policies = [strategy(PlacementStrategy::LeastLoaded)];
        let lax = Settings {
            threshold: 10.0,
            ..settings()
        };
        let plan = plan(&snapshot, &movables, &policies, &HashMap::new(), &lax);
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        assert_eq!(plan.moves[0].to, "node3");
        assert!(
            matches!(&plan.moves[0].reason, MoveReason::TopologySpread(why) if why.contains("topology spread")),
            "{plan:?}"
        );
    }

    #[test]
    fn the_plan_is_limited_to_the_moves_of_a_round() {
        let (snapshot, movables) = cluster(&[30, 30, 0]);
        let plan = least_loaded_plan(&snapshot, &movables);
        assert_eq!(plan.moves.len(), 10);
        assert!(plan.spread_after < plan.spread_before);
    }

    proptest::proptest! {
        #[test]
        fn a_plan_keeps_its_limits_and_lowers_the_spread_by_more_than_the_margin(
            counts in proptest::collection::vec(0usize..12, 2..7),
            pinned_every in 1usize..6,
            max_moves in 1usize..12,
        ) {
            let (snapshot, mut movables) = cluster(&counts);
            for movable in movables.iter_mut().step_by(pinned_every) {
                movable.request.placement.target = Some(movable.member.clone());
            }
            let policies = [strategy(PlacementStrategy::LeastLoaded)];
            let settings = Settings { max_moves, ..settings() };
            let plan = plan(&snapshot, &movables, &policies, &HashMap::new(), &settings);
            proptest::prop_assert!(plan.moves.len() <= max_moves);
            let moved: HashSet<usize> = plan.moves.iter().map(|m| m.container).collect();
            proptest::prop_assert_eq!(moved.len(), plan.moves.len(), "a container moved twice");
            for planned in &plan.moves {
                let movable = &movables[planned.container];
                proptest::prop_assert!(movable.request.placement.target.is_none(), "a pinned one moved");
                proptest::prop_assert_eq!(&movable.member, &planned.from);
            }
            if plan.moves.is_empty() {
                proptest::prop_assert_eq!(plan.spread_after, plan.spread_before);
            } else {
                proptest::prop_assert!(plan.spread_before - plan.spread_after > 0.02);
            }
            let after = carry_out(&snapshot, &mut movables, &plan);
            proptest::prop_assert!((spread(&after) - plan.spread_after).abs() < 1e-9);
        }
    }
}
