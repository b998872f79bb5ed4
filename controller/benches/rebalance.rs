//! Rebalancing, simulated (no LXD): 100 members, of which 80 hold 3,000 containers at the
//! start; 10 empty members join at round 0 and 10 more at round 25; over 50 rounds containers
//! leave and arrive at random (0 to 60 of each per round, arrivals placed one by one by
//! `least-loaded`). Two worlds see the same arrivals and departures: one with no rebalancing,
//! one where the rebalancer (`placement::rebalance`) plans a round and carries it out at the end
//! of every round. Mixed sizes (128 MiB to 1 GiB); 80% of the containers allow rebalancing, 5%
//! are pinned, the rest never move; the containers form sets of 20 (`maxUnavailable` 1).
//! Settings: threshold 0.10, margin 0.02, at most 140 moves a round (under 5% of the
//! containers), a cooldown of 5 rounds.
//!
//! Printed: the spread (max - min) / mean of the memory allocated per member over the rounds
//! in both worlds, the moves made, and each target of issue #20 on its figure's line.
//!
//! `cargo bench -p lxd-operator --bench rebalance` (`hack/bench rebalance`)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use lxd_operator::placement::model::{Member, Placed, Request, Resources, Snapshot};
use lxd_operator::placement::policy::strategy;
use lxd_operator::placement::rebalance::{self, Movable, Settings};
use lxd_operator_crds::container::PlacementStrategy;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
const MEMBERS: usize = 100;
const FIRST_MEMBERS: usize = 80;
const CONTAINERS: usize = 3000;
const ROUNDS: usize = 50;
const MAX_CHURN: u64 = 60;
const SET_SIZE: usize = 20;
const MAX_MOVES: usize = 140;
const COOLDOWN_ROUNDS: usize = 5;
/// A round's length, for the cooldown in time.
const INTERVAL: Duration = Duration::from_secs(60);
/// Rounds after members join that the target leaves to the rebalancer.
const SETTLE_ROUNDS: usize = 3;

/// A small deterministic generator (xorshift64*), so that both worlds and every run see the
/// same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Movable,
    Pinned,
    Never,
}

#[derive(Clone)]
struct Container {
    request: Request,
    kind: Kind,
    set: usize,
    member: String,
    last_moved: Option<usize>,
}

fn member(i: usize) -> Member {
    Member {
        name: format!("member-{i:03}"),
        status: if i < FIRST_MEMBERS {
            "Online"
        } else {
            "Offline"
        }
        .into(),
        architecture: "x86_64".into(),
        failure_domain: format!("rack-{}", i % 10),
        capacity: Resources {
            cpu: 64.0,
            memory: 256.0 * GIB,
        },
        ..Member::default()
    }
}

/// One world: the members (which have joined) and the containers by id.
#[derive(Clone)]
struct World {
    joined: usize,
    containers: BTreeMap<usize, Container>,
    moves: Vec<usize>,
    cooldown_violations: usize,
}

impl World {
    fn snapshot(&self) -> Snapshot {
        let mut members: Vec<Member> = (0..MEMBERS).map(member).collect();
        for (i, m) in members.iter_mut().enumerate() {
            if i < self.joined {
                m.status = "Online".into();
            }
        }
        let index: HashMap<String, usize> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        for container in self.containers.values() {
            if let Some(m) = index
                .get(&container.member)
                .and_then(|i| members.get_mut(*i))
            {
                m.allocated = m.allocated.plus(container.request.resources);
                m.instances += 1;
            }
        }
        Snapshot::with_placed(
            members,
            self.containers
                .values()
                .map(|c| Placed {
                    namespace: c.request.namespace.clone(),
                    name: c.request.name.clone(),
                    labels: c.request.labels.clone(),
                    member: c.member.clone(),
                })
                .collect(),
        )
    }

    /// Places the arrivals one by one, as the controller does.
    fn arrive(&mut self, arrivals: Vec<(usize, Container)>) {
        let policy = strategy(PlacementStrategy::LeastLoaded);
        let mut snapshot = self.snapshot();
        for (id, mut container) in arrivals {
            let Ok(decision) =
                lxd_operator::placement::decide(&policy, &container.request, &snapshot, id as u64)
            else {
                continue;
            };
            snapshot.land(&decision.member, &container.request);
            if container.kind == Kind::Pinned {
                container.request.placement.target = Some(decision.member.clone());
            }
            container.member = decision.member;
            self.containers.insert(id, container);
        }
    }

    /// Plans a round and carries it out; returns the planning time.
    fn rebalance(&mut self, round: usize, settings: &Settings) -> Duration {
        let snapshot = self.snapshot();
        let ids: Vec<usize> = self
            .containers
            .iter()
            .filter(|(_, c)| c.kind != Kind::Never)
            .map(|(id, _)| *id)
            .collect();
        let movables: Vec<Movable> = ids
            .iter()
            .map(|id| {
                let c = &self.containers[id];
                Movable {
                    request: c.request.clone(),
                    member: c.member.clone(),
                    policy: 0,
                    budget_group: Some(format!("set-{}", c.set)),
                    since_last_move: c
                        .last_moved
                        .map(|at| INTERVAL * u32::try_from(round - at).unwrap_or(u32::MAX)),
                }
            })
            .collect();
        // Every set allows one child down; none is down between rounds.
        let budgets: HashMap<String, usize> = movables
            .iter()
            .filter_map(|m| m.budget_group.clone())
            .map(|group| (group, 1))
            .collect();
        let policies = [strategy(PlacementStrategy::LeastLoaded)];
        let started = Instant::now();
        let plan = rebalance::plan(&snapshot, &movables, &policies, &budgets, settings);
        let took = started.elapsed();
        for planned in &plan.moves {
            let id = ids[planned.container];
            let Some(container) = self.containers.get_mut(&id) else {
                continue;
            };
            if container
                .last_moved
                .is_some_and(|at| round - at < COOLDOWN_ROUNDS)
            {
                self.cooldown_violations += 1;
            }
            if container.kind == Kind::Pinned {
                // Counted as a violation of its own: a pinned container never moves.
                self.cooldown_violations += 1;
            }
            container.member = planned.to.clone();
            container.last_moved = Some(round);
        }
        if let Some(last) = self.moves.last_mut() {
            *last += plan.moves.len();
        }
        took
    }

    fn spread(&self) -> f64 {
        rebalance::spread(&self.snapshot())
    }
}

fn arrival(rng: &mut Rng, id: usize) -> Container {
    let sizes = [128.0, 256.0, 512.0, 1024.0, 384.0, 768.0];
    let memory = sizes[rng.below(sizes.len() as u64) as usize] * MIB;
    let kind = match rng.below(100) {
        0..80 => Kind::Movable,
        80..85 => Kind::Pinned,
        _ => Kind::Never,
    };
    let set = id / SET_SIZE;
    Container {
        request: Request {
            namespace: "default".into(),
            name: format!("c{id:05}"),
            labels: [("app".to_owned(), format!("set-{set}"))].into(),
            resources: Resources {
                cpu: memory / (512.0 * MIB),
                memory,
            },
            ..Request::default()
        },
        kind,
        set,
        member: String::new(),
        last_moved: None,
    }
}

fn main() {
    let settings = Settings {
        threshold: 0.10,
        min_improvement: 0.02,
        max_moves: MAX_MOVES,
        cooldown: INTERVAL * COOLDOWN_ROUNDS as u32,
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next_id = 0;
    let mut start = World {
        joined: FIRST_MEMBERS,
        containers: BTreeMap::new(),
        moves: Vec::new(),
        cooldown_violations: 0,
    };
    let first: Vec<(usize, Container)> = (0..CONTAINERS)
        .map(|id| (id, arrival(&mut rng, id)))
        .collect();
    next_id += CONTAINERS;
    start.arrive(first);
    let mut still = start.clone();
    let mut balanced = start;
    println!(
        "rebalancing simulated: {MEMBERS} members, {CONTAINERS} containers on the first {FIRST_MEMBERS}; 10 empty members join at round 0 and 10 at round 25; 0-{MAX_CHURN} containers leave and 0-{MAX_CHURN} arrive per round"
    );
    println!("round  members  containers  spread without  spread with  moves");
    let mut worst_settled: f64 = 0.0;
    let mut worst_settled_without: f64 = 0.0;
    let mut most_moved_share: f64 = 0.0;
    let mut reached_at = None;
    let mut planning = Duration::ZERO;
    let mut slowest_plan = Duration::ZERO;
    let mut last_join = 0;
    for round in 0..ROUNDS {
        if round == 0 || round == 25 {
            still.joined += 10;
            balanced.joined += 10;
            last_join = round;
        }
        // The same departures and arrivals in both worlds.
        let leaving = rng.below(MAX_CHURN + 1) as usize;
        let alive: Vec<usize> = balanced.containers.keys().copied().collect();
        for _ in 0..leaving {
            let id = alive[rng.below(alive.len() as u64) as usize];
            still.containers.remove(&id);
            balanced.containers.remove(&id);
        }
        let arriving = rng.below(MAX_CHURN + 1) as usize;
        let arrivals: Vec<(usize, Container)> = (0..arriving)
            .map(|i| (next_id + i, arrival(&mut rng, next_id + i)))
            .collect();
        next_id += arriving;
        still.arrive(arrivals.clone());
        balanced.arrive(arrivals);
        balanced.moves.push(0);
        let took = balanced.rebalance(round, &settings);
        planning += took;
        slowest_plan = slowest_plan.max(took);
        let moved = *balanced.moves.last().unwrap_or(&0);
        let share = moved as f64 / balanced.containers.len() as f64;
        most_moved_share = most_moved_share.max(share);
        let (without, with) = (still.spread(), balanced.spread());
        if round >= last_join + SETTLE_ROUNDS {
            worst_settled = worst_settled.max(with);
            worst_settled_without = worst_settled_without.max(without);
        }
        if reached_at.is_none() && with <= settings.threshold {
            reached_at = Some(round);
        }
        if round % 5 == 0 || round < 5 || (25..30).contains(&round) || round == ROUNDS - 1 {
            println!(
                "{round:5}  {:7}  {:10}  {without:14.3}  {with:11.3}  {moved:5}",
                balanced.joined,
                balanced.containers.len()
            );
        }
    }
    let total: usize = balanced.moves.iter().sum();
    println!(
        "moves in all: {total} over {ROUNDS} rounds; planning {:.1} ms a round on average, {:.1} ms at most",
        planning.as_secs_f64() * 1000.0 / ROUNDS as f64,
        slowest_plan.as_secs_f64() * 1000.0
    );
    println!(
        "first round at the target spread: {}",
        reached_at.map_or("never".to_owned(), |r| r.to_string())
    );
    println!(
        "worst spread with rebalancing, from {SETTLE_ROUNDS} rounds after members joined: {worst_settled:.4} (target <= 0.10)"
    );
    println!(
        "  (without rebalancing over the same rounds: worst {worst_settled_without:.3}, at the end {:.3})",
        still.spread()
    );
    println!(
        "largest share of the containers moved in one round: {most_moved_share:.4} (target <= 0.0499)"
    );
    println!(
        "containers moved again within their cooldown, or pinned ones moved: {} (target <= 0)",
        balanced.cooldown_violations
    );
}
