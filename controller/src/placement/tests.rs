//! The engine as a whole: decisions, explanations, webhooks, property tests, and simulations
//! of whole rollouts on synthetic clusters.

use std::collections::{BTreeMap, HashSet};

use lxd_operator_crds::container::{
    AffinityMode, AffinityTerm, PlacementStrategy, Topology, TopologySpreadConstraint,
    WhenUnsatisfiable,
};
use lxd_operator_crds::shared::LabelSelector;
use proptest::prelude::*;

use super::model::{Member, Placed, Request, Resources, Snapshot};
use super::plugins::testing::{gib, member, request, spread_over};
use super::policy::strategy;
use super::reservations::Reservations;
use super::webhook::WebhookResponse;
use super::*;

fn cluster(count: usize, domains: usize, cpu: f64, memory_gib: f64) -> Snapshot {
    Snapshot::new(
        (0..count)
            .map(|i| {
                member(
                    &format!("node{:02}", i + 1),
                    &format!("rack{}", i % domains + 1),
                    cpu,
                    memory_gib,
                )
            })
            .collect(),
    )
}

/// Records a decision in the snapshot, as LXD will show it once the instance exists.
fn land(snapshot: &mut Snapshot, member: &str, request: &Request) {
    snapshot.land(member, request);
}

/// Memory sizes of a mixed rollout: 128 MiB to 1 GiB, in a fixed pseudo-random order (the
/// same for every strategy, so that they are compared on one workload).
fn mixed_sizes(count: usize) -> Vec<f64> {
    let sizes = [128.0, 256.0, 512.0, 1024.0, 384.0, 768.0];
    (0..count)
        .map(|i| sizes[(i * 7 + i / 3) % sizes.len()] * 1024.0 * 1024.0)
        .collect()
}

/// (max - min) / mean of the members' allocated memory.
fn memory_spread(snapshot: &Snapshot) -> f64 {
    let values: Vec<f64> = snapshot
        .members()
        .iter()
        .map(|m| m.allocated.memory)
        .collect();
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (max - min) / mean
}

fn mixed_requests(containers: usize) -> Vec<Request> {
    mixed_sizes(containers)
        .into_iter()
        .enumerate()
        .map(|(index, memory)| {
            // Mixed sizes in both dimensions: a quarter of a core per 128 MiB.
            let mut wanted = request(memory / (512.0 * 1024.0 * 1024.0), 0.0);
            wanted.name = format!("c{index:02}");
            wanted.resources.memory = memory;
            wanted
        })
        .collect()
}

/// Places the containers one after another, each decided alone.
fn roll_out(strategy_name: PlacementStrategy, members: usize, containers: usize) -> Snapshot {
    let policy = strategy(strategy_name);
    let mut snapshot = cluster(members, members, 32.0, 64.0);
    for (index, wanted) in mixed_requests(containers).iter().enumerate() {
        let decision = decide(&policy, wanted, &snapshot, index as u64).unwrap();
        land(&mut snapshot, &decision.member, wanted);
    }
    snapshot
}

/// Places the containers as one burst (applied at once), as the controller decides what is
/// pending together.
fn roll_out_burst(strategy_name: PlacementStrategy, members: usize, containers: usize) -> Snapshot {
    let policy = strategy(strategy_name);
    let mut snapshot = cluster(members, members, 32.0, 64.0);
    let requests = mixed_requests(containers);
    let decisions = burst::decide_burst(&policy, &requests, &snapshot, 0);
    for (wanted, decision) in requests.iter().zip(decisions) {
        land(&mut snapshot, &decision.unwrap().member, wanted);
    }
    snapshot
}

#[test]
fn least_loaded_balances_memory_allocation_better_than_lxds_rules() {
    for members in [3, 10] {
        let burst = |s| memory_spread(&roll_out_burst(s, members, 60));
        let least_loaded = burst(PlacementStrategy::LeastLoaded);
        let round_robin = burst(PlacementStrategy::RoundRobin);
        let fewest = burst(PlacementStrategy::FewestInstances);
        let one_at_a_time = memory_spread(&roll_out(PlacementStrategy::LeastLoaded, members, 60));
        println!(
            "{members} members, 60 mixed containers applied at once: memory spread (max-min)/mean least-loaded {least_loaded:.3}, round-robin {round_robin:.3}, fewest-instances {fewest:.3}; least-loaded one at a time {one_at_a_time:.3}"
        );
        assert!(
            least_loaded < round_robin && least_loaded < fewest,
            "{members} members: least-loaded must beat LXD's rules"
        );
        assert!(
            least_loaded <= 0.10,
            "least-loaded spread {least_loaded:.3} on {members} members"
        );
        // One at a time, the spread cannot be kept below the largest container over the mean
        // allocation per member (1 GiB over 3 GiB with 10 members); least-loaded stays within it.
        let bound = 1024.0 / (60.0 * 512.0 / members as f64);
        assert!(
            one_at_a_time <= bound.max(0.10),
            "one at a time: {one_at_a_time:.3} on {members} members (bound {bound:.3})"
        );
    }
}

#[test]
fn a_burst_is_decided_largest_first_and_answered_in_request_order() {
    let policy = strategy(PlacementStrategy::LeastLoaded);
    let snapshot = cluster(2, 2, 8.0, 16.0);
    let mut small = request(0.5, 0.5);
    small.name = "small".to_owned();
    let mut large = request(2.0, 4.0);
    large.name = "large".to_owned();
    let mut medium = request(1.0, 2.0);
    medium.name = "medium".to_owned();
    let requests = vec![small.clone(), large.clone(), medium.clone()];
    let decisions: Vec<String> = burst::decide_burst(&policy, &requests, &snapshot, 0)
        .into_iter()
        .map(|d| d.unwrap().member)
        .collect();
    // large first (node01 by name), then medium and small share node02.
    assert_eq!(decisions, ["node02", "node01", "node02"]);
    let mut ordered = [small, medium, large];
    ordered.sort_by(burst::burst_order);
    let names: Vec<&str> = ordered.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["large", "medium", "small"]);
}

#[test]
fn spread_uses_every_failure_domain_before_doubling_up() {
    let policy = strategy(PlacementStrategy::Spread);
    let mut snapshot = cluster(6, 3, 8.0, 16.0);
    let mut domains = Vec::new();
    for index in 0..6 {
        let mut wanted = request(0.5, 0.25);
        wanted.name = format!("web-{index}");
        wanted.labels = [("app".to_owned(), "web".to_owned())].into();
        let decision = decide(&policy, &wanted, &snapshot, 0).unwrap();
        domains.push(snapshot.failure_domain_of(&decision.member));
        land(&mut snapshot, &decision.member, &wanted);
    }
    let first: HashSet<&String> = domains[..3].iter().collect();
    assert_eq!(
        first.len(),
        3,
        "the first three use three failure domains: {domains:?}"
    );
    let members: HashSet<&String> = snapshot.placed().iter().map(|p| &p.member).collect();
    assert_eq!(
        members.len(),
        6,
        "then every member: {:?}",
        snapshot.placed()
    );
}

#[test]
fn a_burst_with_reservations_stays_balanced_where_the_same_burst_without_does_not() {
    let policy = strategy(PlacementStrategy::LeastLoaded);
    let stale = cluster(5, 5, 64.0, 256.0);
    let burst = |with_reservations: bool| {
        let mut reservations = Reservations::default();
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for index in 0..100 {
            let mut wanted = request(0.5, 0.5);
            wanted.name = format!("b{index}");
            // LXD shows none of the burst yet: every decision sees the same stale figures.
            let mut snapshot = stale.clone();
            if with_reservations {
                reservations.apply(&mut snapshot, &HashSet::new());
            }
            let decision = decide(&policy, &wanted, &snapshot, index).unwrap();
            reservations.reserve(&format!("uid-{index}"), &decision.member, &wanted);
            *counts.entry(decision.member).or_default() += 1;
        }
        counts
    };
    let balanced = burst(true);
    let piled = burst(false);
    println!("burst of 100 on 5 members: with reservations {balanced:?}, without {piled:?}");
    assert!(balanced.values().all(|n| *n == 20), "{balanced:?}");
    assert_eq!(piled.values().max(), Some(&100), "{piled:?}");
}

#[test]
fn reservations_end_when_the_instance_shows_up() {
    let mut reservations = Reservations::default();
    reservations.reserve("u1", "node01", &request(1.0, 1.0));
    reservations.reserve("u2", "node02", &request(1.0, 1.0));
    let mut snapshot = cluster(2, 1, 4.0, 8.0);
    reservations.apply(&mut snapshot, &HashSet::from(["u1".to_owned()]));
    assert_eq!(reservations.len(), 1);
    assert_eq!(snapshot.members()[0].instances, 0);
    assert_eq!(snapshot.members()[1].instances, 1);
    assert_eq!(snapshot.members()[1].allocated.memory, gib(1.0));
}

#[test]
fn an_impossible_request_is_unschedulable_with_counted_reasons() {
    let mut snapshot = cluster(3, 1, 4.0, 8.0);
    snapshot.members_mut()[2].status = "Offline".into();
    let error = decide(
        &strategy(PlacementStrategy::LeastLoaded),
        &request(1.0, 16.0),
        &snapshot,
        0,
    )
    .unwrap_err();
    assert_eq!(
        error.message,
        "0/3 members: 2 insufficient memory, 1 offline"
    );
}

#[test]
fn the_explanation_names_the_winner_the_scores_and_what_was_left_out() {
    let mut snapshot = cluster(3, 1, 4.0, 8.0);
    snapshot.members_mut()[0].allocated = Resources {
        cpu: 2.0,
        memory: gib(6.0),
    };
    snapshot.members_mut()[2].status = "Evacuated".into();
    let decision = decide(
        &strategy(PlacementStrategy::LeastLoaded),
        &request(1.0, 1.0),
        &snapshot,
        0,
    )
    .unwrap();
    assert_eq!(decision.member, "node02");
    let text = decision.explanation.to_string();
    assert!(
        text.starts_with("node02 scored best by least-loaded (node02 "),
        "{text}"
    );
    assert!(
        text.contains("node01 ") && text.contains("left out: node03: evacuated"),
        "{text}"
    );
}

#[test]
fn round_robin_takes_members_in_turn() {
    let snapshot = cluster(3, 1, 4.0, 8.0);
    let policy = strategy(PlacementStrategy::RoundRobin);
    let chosen: Vec<String> = (0..6)
        .map(|i| {
            decide(&policy, &request(1.0, 1.0), &snapshot, i)
                .unwrap()
                .member
        })
        .collect();
    assert_eq!(
        chosen,
        ["node01", "node02", "node03", "node01", "node02", "node03"]
    );
}

#[test]
fn bin_pack_fills_the_fullest_member_that_still_fits() {
    let mut snapshot = cluster(3, 1, 4.0, 8.0);
    snapshot.members_mut()[1].allocated = Resources {
        cpu: 2.0,
        memory: gib(6.0),
    };
    let policy = strategy(PlacementStrategy::BinPack);
    assert_eq!(
        decide(&policy, &request(1.0, 1.0), &snapshot, 0)
            .unwrap()
            .member,
        "node02"
    );
    // Full: the next fullest that fits.
    assert_eq!(
        decide(&policy, &request(1.0, 3.0), &snapshot, 0)
            .unwrap()
            .member,
        "node01"
    );
}

#[test]
fn a_webhook_filters_and_adds_its_weighted_scores() {
    let snapshot = cluster(3, 1, 4.0, 8.0);
    let policy = strategy(PlacementStrategy::LeastLoaded);
    let wanted = request(1.0, 1.0);
    let mut evaluation = evaluate(&policy, &wanted, &snapshot);
    let sent = evaluation.webhook_request();
    assert_eq!(sent.members.len(), 3);
    assert_eq!(
        serde_json::to_value(&sent).unwrap()["container"]["memoryBytes"],
        gib(1.0)
    );
    let answer = WebhookResponse {
        filtered: [("node01".to_owned(), "maintenance".to_owned())].into(),
        scores: [("node03".to_owned(), 100.0)].into(),
    };
    evaluation.apply_webhook(&answer, 10.0);
    let decision = evaluation.decide(0).unwrap();
    assert_eq!(decision.member, "node03");
    assert!(
        decision
            .explanation
            .filtered
            .contains(&("node01".to_owned(), "webhook: maintenance".to_owned()))
    );
}

fn anti_affinity(app: &str, topology: Topology) -> AffinityTerm {
    AffinityTerm {
        selector: LabelSelector {
            match_labels: Some([("app".to_owned(), app.to_owned())].into()),
            match_expressions: None,
        },
        topology,
        mode: AffinityMode::Required,
        weight: None,
    }
}

fn arbitrary_snapshot() -> impl Strategy<Value = Snapshot> {
    let member = (
        0u8..4,
        1u32..64,
        1u32..128,
        0u32..64,
        0u32..128,
        prop::bool::weighted(0.85),
        0u32..30,
    );
    prop::collection::vec(member, 1..12).prop_map(|members| {
        Snapshot::new(
            members
                .into_iter()
                .enumerate()
                .map(
                    |(i, (domain, cpu, mem, used_cpu, used_mem, online, instances))| Member {
                        name: format!("m{i:02}"),
                        status: if online {
                            "Online".into()
                        } else {
                            "Offline".into()
                        },
                        architecture: "x86_64".into(),
                        failure_domain: format!("d{domain}"),
                        capacity: Resources {
                            cpu: f64::from(cpu),
                            memory: gib(f64::from(mem)),
                        },
                        allocated: Resources {
                            cpu: f64::from(used_cpu),
                            memory: gib(f64::from(used_mem)),
                        },
                        instances,
                        ..Member::default()
                    },
                )
                .collect(),
        )
    })
}

fn arbitrary_strategy() -> impl Strategy<Value = PlacementStrategy> {
    prop_oneof![
        Just(PlacementStrategy::RoundRobin),
        Just(PlacementStrategy::FewestInstances),
        Just(PlacementStrategy::LeastLoaded),
        Just(PlacementStrategy::BinPack),
        Just(PlacementStrategy::Spread),
    ]
}

proptest! {
    #[test]
    fn a_decision_never_picks_a_filtered_member_and_is_deterministic(
        snapshot in arbitrary_snapshot(), which in arbitrary_strategy(), cpu in 0u32..8, mem in 0u32..16, rotation in 0u64..10,
    ) {
        let policy = strategy(which);
        let wanted = request(f64::from(cpu), f64::from(mem));
        let evaluation = evaluate(&policy, &wanted, &snapshot);
        let filtered: HashSet<String> = evaluation.filtered().map(|(m, _)| m.to_owned()).collect();
        let first = evaluation.decide(rotation);
        let second = decide(&policy, &wanted, &snapshot, rotation);
        prop_assert_eq!(&first, &second);
        match first {
            Ok(decision) => {
                prop_assert!(!filtered.contains(&decision.member));
                let member = snapshot.member(&decision.member).unwrap();
                prop_assert_eq!(member.status.as_str(), "Online");
            }
            Err(error) => prop_assert_eq!(filtered.len(), snapshot.members().len(), "{}", error),
        }
    }

    #[test]
    fn a_decision_respects_required_anti_affinity(
        mut snapshot in arbitrary_snapshot(), holders in prop::collection::vec(0usize..12, 0..6), by_domain in any::<bool>(),
    ) {
        let count = snapshot.members().len();
        let holder_members: Vec<String> = holders.iter().map(|i| snapshot.members()[i % count].name.clone()).collect();
        snapshot.set_placed(holder_members.iter().enumerate().map(|(i, member)| Placed {
            namespace: "default".into(), name: format!("db-{i}"), labels: [("app".to_owned(), "db".to_owned())].into(), member: member.clone(),
        }).collect());
        let topology = if by_domain { Topology::FailureDomain } else { Topology::Member };
        let mut wanted = request(0.0, 0.0);
        wanted.placement.anti_affinity = vec![anti_affinity("db", topology)];
        if let Ok(decision) = decide(&strategy(PlacementStrategy::LeastLoaded), &wanted, &snapshot, 0) {
            let chosen_domain = snapshot.failure_domain_of(&decision.member);
            for holder in &holder_members {
                prop_assert_ne!(holder, &decision.member);
                if by_domain {
                    prop_assert_ne!(snapshot.failure_domain_of(holder), chosen_domain.clone());
                }
            }
        }
    }
}

#[test]
fn containers_without_limits_still_spread() {
    let policy = strategy(PlacementStrategy::LeastLoaded);
    let mut snapshot = cluster(3, 1, 4.0, 8.0);
    let mut reservations = Reservations::default();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for index in 0..9 {
        let mut unlimited = request(0.0, 0.0);
        unlimited.name = format!("u{index}");
        let mut view = snapshot.clone();
        reservations.apply(&mut view, &HashSet::new());
        let decision = decide(&policy, &unlimited, &view, index).unwrap();
        reservations.reserve(&format!("uid-{index}"), &decision.member, &unlimited);
        *counts.entry(decision.member).or_default() += 1;
    }
    assert!(counts.values().all(|n| *n == 3), "{counts:?}");
    snapshot.members_mut()[0].unlimited = (4, 4);
    let decision = decide(&policy, &request(0.0, 0.0), &snapshot, 0).unwrap();
    assert_ne!(
        decision.member, "node01",
        "instances without limits count when scoring"
    );
}

/// Three members: node01 and node02 in zone a, node03 in zone b (member label `zone`).
fn zoned_cluster() -> Snapshot {
    let zoned = |name: &str, zone: &str| {
        let mut m = member(name, "default", 8.0, 16.0);
        m.labels = [("zone".to_owned(), zone.to_owned())].into();
        m
    };
    Snapshot::new(vec![
        zoned("node01", "a"),
        zoned("node02", "a"),
        zoned("node03", "b"),
    ])
}

/// Container `web-<index>` of app web with `constraints`; its size varies with the index, so
/// that resources alone would not keep the spread.
fn web(index: usize, constraints: &[TopologySpreadConstraint]) -> Request {
    let mut wanted = request(0.25 * (1 + index % 3) as f64, 0.25 * (1 + index % 4) as f64);
    wanted.name = format!("web-{index}");
    wanted.labels = [("app".to_owned(), "web".to_owned())].into();
    wanted.placement.topology_spread_constraints = constraints.to_vec();
    wanted
}

/// Containers of app web per member and per zone.
fn web_counts(snapshot: &Snapshot) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let (mut per_member, mut per_zone) = (BTreeMap::new(), BTreeMap::new());
    for placed in snapshot.placed() {
        *per_member.entry(placed.member.clone()).or_default() += 1;
        let zone = snapshot
            .member(&placed.member)
            .and_then(|m| m.labels.get("zone"))
            .cloned()
            .unwrap_or_default();
        *per_zone.entry(zone).or_default() += 1;
    }
    (per_member, per_zone)
}

fn skew(counts: &BTreeMap<String, usize>, domains: &[&str]) -> usize {
    let count = |d: &&str| counts.get(*d).copied().unwrap_or(0);
    domains.iter().map(count).max().unwrap_or(0) - domains.iter().map(count).min().unwrap_or(0)
}

/// Places `web-<from>`.. `web-<to - 1>` one after another, each landing before the next.
fn place_web(
    snapshot: &mut Snapshot,
    range: std::ops::Range<usize>,
    constraints: &[TopologySpreadConstraint],
) -> Result<(), Unschedulable> {
    let policy = strategy(PlacementStrategy::LeastLoaded);
    for index in range {
        let wanted = web(index, constraints);
        let decision = decide(&policy, &wanted, snapshot, index as u64)?;
        snapshot.land(&decision.member, &wanted);
    }
    Ok(())
}

#[test]
fn topology_spread_over_zones_lands_three_and_three_and_keeps_the_skew_when_scaled_to_nine() {
    let zone = [spread_over("zone", WhenUnsatisfiable::DoNotSchedule)];
    let mut snapshot = zoned_cluster();
    place_web(&mut snapshot, 0..6, &zone).unwrap();
    let (_, per_zone) = web_counts(&snapshot);
    assert_eq!(per_zone, BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));
    for scaled in 7..=9 {
        place_web(&mut snapshot, scaled - 1..scaled, &zone).unwrap();
        let (_, per_zone) = web_counts(&snapshot);
        assert!(skew(&per_zone, &["a", "b"]) <= 1, "{scaled}: {per_zone:?}");
    }
    let (_, per_zone) = web_counts(&snapshot);
    assert_eq!(per_zone.values().sum::<usize>(), 9);
}

#[test]
fn zone_then_member_spreads_inside_zone_a_two_and_one() {
    // Member as a soft level under the hard zone level: the zones stay within one of each
    // other, the members of zone a share its containers.
    let levels = [
        spread_over("zone", WhenUnsatisfiable::DoNotSchedule),
        spread_over("member", WhenUnsatisfiable::ScheduleAnyway),
    ];
    let mut snapshot = zoned_cluster();
    place_web(&mut snapshot, 0..6, &levels).unwrap();
    let (per_member, per_zone) = web_counts(&snapshot);
    assert_eq!(per_zone, BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));
    let mut in_zone_a = [per_member["node01"], per_member["node02"]];
    in_zone_a.sort();
    assert_eq!(in_zone_a, [1, 2], "{per_member:?}");
    place_web(&mut snapshot, 6..9, &levels).unwrap();
    let (per_member, per_zone) = web_counts(&snapshot);
    assert!(skew(&per_zone, &["a", "b"]) <= 1, "{per_zone:?}");
    assert!(
        skew(&per_member, &["node01", "node02"]) <= 1,
        "{per_member:?}"
    );
}

#[test]
fn both_levels_required_place_five_and_leave_the_sixth_unschedulable_naming_the_counts() {
    // Zone a has two members, zone b one. With both levels DoNotSchedule (as Kubernetes
    // reads them: the member level is over every member), six cannot be placed: zone b would
    // need three on node03 while node01 or node02 holds one.
    let levels = [
        spread_over("zone", WhenUnsatisfiable::DoNotSchedule),
        spread_over("member", WhenUnsatisfiable::DoNotSchedule),
    ];
    let mut snapshot = zoned_cluster();
    place_web(&mut snapshot, 0..5, &levels).unwrap();
    let (per_member, per_zone) = web_counts(&snapshot);
    assert_eq!(per_zone, BTreeMap::from([("a".into(), 3), ("b".into(), 2)]));
    assert_eq!(
        per_member,
        BTreeMap::from([
            ("node01".into(), 2),
            ("node02".into(), 1),
            ("node03".into(), 2)
        ])
    );
    let error = place_web(&mut snapshot, 5..6, &levels).unwrap_err();
    assert_eq!(
        error.message,
        "0/3 members: 2 topology spread zone: a has 3, min 2 (maxSkew 1), \
         1 topology spread member: has 2, min 1 (maxSkew 1)"
    );
}

#[test]
fn the_explanation_names_the_domain_counts_that_decided() {
    let zone = [spread_over("zone", WhenUnsatisfiable::DoNotSchedule)];
    let mut snapshot = zoned_cluster();
    place_web(&mut snapshot, 0..1, &zone).unwrap();
    let decision = decide(
        &strategy(PlacementStrategy::LeastLoaded),
        &web(1, &zone),
        &snapshot,
        0,
    )
    .unwrap();
    assert_eq!(decision.member, "node03");
    let text = decision.explanation.to_string();
    assert!(
        text.contains("left out: node01: topology spread zone: a has 1, min 0 (maxSkew 1)")
            && text.ends_with("; topology spread zone: a 1, b 0 (min 0, maxSkew 1)"),
        "{text}"
    );
}

#[test]
fn a_burst_with_reservations_keeps_the_zone_spread_once_all_have_landed() {
    // As the controller decides a burst: LXD shows none of it yet (stale figures), each
    // decision sees the reservations of those before it, and the API shows the containers
    // decided so far with their member too (status written right after the decision). The
    // burst is decided largest first.
    let zone = [spread_over("zone", WhenUnsatisfiable::DoNotSchedule)];
    let policy = strategy(PlacementStrategy::LeastLoaded);
    let stale = zoned_cluster();
    let mut burst: Vec<Request> = (0..6).map(|index| web(index, &zone)).collect();
    burst.sort_by(burst::burst_order);
    let mut reservations = Reservations::default();
    let mut in_the_api: Vec<Placed> = Vec::new();
    for (turn, wanted) in burst.iter().enumerate() {
        let mut snapshot = stale.clone();
        snapshot.set_placed(in_the_api.clone());
        reservations.apply(&mut snapshot, &HashSet::new());
        let decision = decide(&policy, wanted, &snapshot, turn as u64).unwrap();
        reservations.reserve(&format!("uid-{}", wanted.name), &decision.member, wanted);
        in_the_api.push(Placed {
            namespace: wanted.namespace.clone(),
            name: wanted.name.clone(),
            labels: wanted.labels.clone(),
            member: decision.member,
        });
    }
    // All have landed: LXD shows them, the reservations end.
    let mut landed = stale.clone();
    landed.set_placed(in_the_api);
    let visible: HashSet<String> = burst.iter().map(|r| format!("uid-{}", r.name)).collect();
    reservations.apply(&mut landed, &visible);
    assert!(reservations.is_empty());
    let (_, per_zone) = web_counts(&landed);
    assert_eq!(per_zone, BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));

    // The engine's own burst (decide_burst) lands the same spread.
    let decisions = burst::decide_burst(&policy, &burst, &stale, 0);
    let mut engine = stale.clone();
    for (wanted, decision) in burst.iter().zip(decisions) {
        engine.land(&decision.unwrap().member, wanted);
    }
    let (_, per_zone) = web_counts(&engine);
    assert_eq!(per_zone, BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));
}

#[test]
fn a_container_seen_in_the_api_and_reserved_counts_once() {
    let mut snapshot = zoned_cluster();
    let wanted = web(0, &[]);
    snapshot.set_placed(vec![Placed {
        namespace: wanted.namespace.clone(),
        name: wanted.name.clone(),
        labels: wanted.labels.clone(),
        member: "node01".into(),
    }]);
    snapshot.land("node01", &wanted);
    assert_eq!(snapshot.placed().len(), 1);
    assert_eq!(snapshot.placed_groups()[0].per_member[&0], 1);
    // Landing elsewhere moves it.
    snapshot.land("node03", &wanted);
    assert_eq!(snapshot.placed()[0].member, "node03");
    let group = &snapshot.placed_groups()[0];
    assert_eq!(
        (group.per_member[&0], group.per_member[&2], group.total),
        (0, 1, 1)
    );
}

/// The domain of `member` under `key`, read from the member as a user would.
fn domain_by_hand(member: &Member, key: &str) -> Option<String> {
    match key {
        "member" => Some(member.name.clone()),
        "failureDomain" => Some(member.failure_domain.clone()),
        label => member.labels.get(label).cloned(),
    }
}

proptest! {
    #[test]
    fn a_decision_keeps_every_do_not_schedule_constraint_counted_by_hand(
        snapshot in arbitrary_snapshot(),
        zones in prop::collection::vec(prop::option::weighted(0.8, 0u8..3), 12),
        webs in prop::collection::vec((0usize..12, any::<bool>()), 0..20),
        key in prop_oneof![Just("member"), Just("failureDomain"), Just("zone")],
        max_skew in 1u32..3,
    ) {
        let mut members = snapshot.members().to_vec();
        for (member, zone) in members.iter_mut().zip(&zones) {
            if let Some(zone) = zone {
                member.labels = [("zone".to_owned(), format!("z{zone}"))].into();
            }
        }
        let count = members.len();
        let placed: Vec<Placed> = webs.iter().enumerate().map(|(i, (at, is_web))| Placed {
            namespace: "default".into(),
            name: format!("c-{i}"),
            labels: [("app".to_owned(), if *is_web { "web" } else { "db" }.to_owned())].into(),
            member: members[at % count].name.clone(),
        }).collect();
        let snapshot = Snapshot::with_placed(members, placed);
        let mut wanted = request(0.0, 0.0);
        wanted.labels = [("app".to_owned(), "web".to_owned())].into();
        let mut constraint = spread_over(key, WhenUnsatisfiable::DoNotSchedule);
        constraint.max_skew = max_skew;
        wanted.placement.topology_spread_constraints = vec![constraint];
        let mut per_domain: BTreeMap<String, u32> = BTreeMap::new();
        for placed in snapshot.placed().iter().filter(|p| p.labels["app"] == "web") {
            if let Some(domain) = snapshot.member(&placed.member).and_then(|m| domain_by_hand(m, key)) {
                *per_domain.entry(domain).or_default() += 1;
            }
        }
        let min = snapshot.members().iter()
            .filter(|m| m.status == "Online" && !m.cordoned)
            .filter_map(|m| domain_by_hand(m, key))
            .map(|d| per_domain.get(&d).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        match decide(&strategy(PlacementStrategy::LeastLoaded), &wanted, &snapshot, 0) {
            Ok(decision) => {
                let chosen = snapshot.member(&decision.member).unwrap();
                let domain = domain_by_hand(chosen, key);
                prop_assert!(domain.is_some(), "{} has no {}", decision.member, key);
                let here = per_domain.get(&domain.unwrap()).copied().unwrap_or(0);
                prop_assert!(here + 1 - min <= max_skew, "{}: {} here, min {}", decision.member, here, min);
            }
            Err(error) => {
                // Then no online member keeps the constraint.
                for member in snapshot.members().iter().filter(|m| m.status == "Online") {
                    if let Some(domain) = domain_by_hand(member, key) {
                        let here = per_domain.get(&domain).copied().unwrap_or(0);
                        prop_assert!(here + 1 - min > max_skew, "{} was free: {}", member.name, error);
                    }
                }
            }
        }
    }
}

#[test]
fn a_member_whose_node_holds_pods_is_avoided_and_the_explanation_names_both_parts() {
    let mut snapshot = cluster(3, 3, 8.0, 16.0);
    snapshot.members_mut()[1].pods = Resources {
        cpu: 2.0,
        memory: gib(14.4),
    };
    let wanted = request(1.0, 1.0);
    for name in [PlacementStrategy::LeastLoaded, PlacementStrategy::Spread] {
        let decision = decide(&strategy(name), &wanted, &snapshot, 0).unwrap();
        assert_ne!(decision.member, "node02", "{name:?}");
        let explanation = decision.explanation.to_string();
        assert!(
            explanation.contains(
                "memory held with pods: node02: 14.4 GiB of 16 GiB held, 14.4 GiB by pods"
            ),
            "{explanation}"
        );
    }
    // Only node02 would do, and it is full of pods.
    let mut only_there = request(1.0, 2.0);
    only_there.placement.target = Some("node02".into());
    let refused = decide(
        &strategy(PlacementStrategy::LeastLoaded),
        &only_there,
        &snapshot,
        0,
    )
    .unwrap_err();
    assert!(
        refused
            .message
            .contains("1 insufficient memory: 14.4 GiB of 16 GiB held, 14.4 GiB by pods"),
        "{}",
        refused.message
    );
}
