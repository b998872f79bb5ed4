//! Rebalancing running containers as an administrator uses it: twelve containers that allow it
//! (a set of four with `maxUnavailable: 1` on node1, eight of their own on node2) run on two
//! members while the third stands empty; `spec.rebalance` in `DryRun` writes the plan into the
//! cluster's status and moves nothing; `On` carries the same plan out, then what the set's
//! budget held back (one child per round, never two down at once), ends at a spread of at most
//! 0.10 within a few rounds and then keeps still for ten. A pinned container and one that does
//! not allow rebalancing stay where they are.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lxd_operator_crds::rebalance::{MOVE_TO_ANNOTATION, RebalancePolicy};
use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::unavailability::Unavailability;
use lxd_operator_tests::{TestCluster, http_get, managed_instances, numbered_containers};
use serde_json::Value;

/// The set `web` of four children that allow rebalancing, 256 MiB each, one unavailable at most.
fn web_set(namespace: &str) -> String {
    format!(
        r#"{{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
  "metadata": {{"name": "web", "namespace": "{namespace}"}},
  "spec": {{"replicas": 4, "selector": {{"matchLabels": {{"app": "web"}}}},
    "updateStrategy": {{"rollingUpdate": {{"maxUnavailable": 1}}}},
    "template": {{"metadata": {{"labels": {{"app": "web"}}}},
      "spec": {{"clusterRef": {{"name": "local"}}, "image": {{"alias": "busybox"}},
        "resources": {{"memory": "256Mi"}}, "placement": {{"rebalance": "Allow"}}}}}}}}}}"#
    )
}

fn rebalance_status(operator: &Operator) -> Value {
    let cluster: Value =
        serde_json::from_str(&operator.kubectl_ok(&["get", "lxdcl", "local", "-o", "json"]))
            .unwrap();
    cluster["status"]["rebalance"].clone()
}

/// Each container's member, once `count` are Running and none moves.
fn settled(operator: &Operator, namespace: &str, count: usize) -> BTreeMap<String, String> {
    wait_for(
        Duration::from_secs(180),
        &format!("{count} containers Running"),
        || {
            let statuses = operator.statuses(namespace);
            (statuses.len() == count
                && statuses
                    .values()
                    .all(|s| s["phase"] == "Running" && s["move"].is_null()))
            .then(|| {
                statuses
                    .iter()
                    .map(|(name, s)| (name.clone(), s["member"].as_str().unwrap().to_owned()))
                    .collect()
            })
        },
    )
}

/// The plan in a rebalance status, as (container, from, to).
fn plan_of(status: &Value) -> BTreeSet<(String, String, String)> {
    status["moves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["from"].as_str().unwrap().to_owned(),
                m["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn twelve_containers_on_two_members_spread_over_three_after_a_dry_run_and_then_stay() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("rebalance");
    let started = Instant::now();

    // On node1: what must stay (a pinned container and one that does not allow rebalancing)
    // and the set's four children; on node2: eight containers of their own that may move.
    operator.patch_cluster(r#"{"cordonedMembers":["node2","node3"]}"#);
    let pinned = numbered_containers(&namespace, "pinned", 1, |c| {
        c.target("node1")
            .memory("512Mi")
            .rebalance(RebalancePolicy::Allow)
    });
    let stays = numbered_containers(&namespace, "stays", 1, |c| c.memory("256Mi"));
    operator.apply_containers(&[pinned, stays].concat());
    operator.apply(&web_set(&namespace));
    settled(&operator, &namespace, 6);
    operator.patch_cluster(r#"{"cordonedMembers":["node1","node3"]}"#);
    let movable = numbered_containers(&namespace, "m", 8, |c| {
        c.memory("256Mi").rebalance(RebalancePolicy::Allow)
    });
    operator.apply_containers(&movable);
    let before = settled(&operator, &namespace, 14);
    for (name, member) in &before {
        let expected = if name.starts_with('m') {
            "node2"
        } else {
            "node1"
        };
        assert_eq!(member, expected, "{name}: {before:?}");
    }
    println!(
        "14 containers Running on node1 and node2 in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // DryRun: the plan is in status, nothing moves. node1 can shed only the set's children,
    // and the set allows one down: the plan takes one of them, the next round another.
    operator.patch_cluster(
        r#"{"cordonedMembers":null,"maxConcurrentMoves":2,
            "rebalance":{"mode":"DryRun","intervalSeconds":2,"maxMovesPerRound":10}}"#,
    );
    let dry = wait_for(Duration::from_secs(60), "a dry-run plan", || {
        let status = rebalance_status(&operator);
        (status["mode"] == "DryRun"
            && status["rounds"].as_u64()? >= 2
            && !plan_of(&status).is_empty())
        .then_some(status)
    });
    let planned = plan_of(&dry);
    println!("dry run: {} {planned:?}", dry["message"]);
    assert!(dry["spread"].as_f64().unwrap() > 0.10, "{dry}");
    assert!(
        planned
            .iter()
            .all(|(_, _, to)| to == "node3" || to == "node2"),
        "{planned:?}"
    );
    let web_moves = planned
        .iter()
        .filter(|(name, _, _)| name.starts_with("web"))
        .count();
    assert_eq!(web_moves, 1, "one child of the set per round: {planned:?}");
    assert!(
        planned
            .iter()
            .all(|(name, _, _)| name.starts_with('m') || name.starts_with("web")),
        "{planned:?}"
    );
    let rounds = dry["rounds"].as_u64().unwrap();
    wait_for(Duration::from_secs(30), "two more dry-run rounds", || {
        (rebalance_status(&operator)["rounds"].as_u64()? >= rounds + 2).then_some(())
    });
    assert_eq!(
        settled(&operator, &namespace, 14),
        before,
        "a dry run moved something"
    );
    assert_eq!(rebalance_status(&operator)["movesRequested"], 0);

    // On: the same plan is carried out first, then what the set's budget held back.
    let unavailability = Unavailability::watch(&operator, &namespace, "app=web", 4);
    let on_at = Instant::now();
    let dry_rounds = rebalance_status(&operator)["rounds"].as_u64().unwrap();
    operator.patch_cluster(r#"{"rebalance":{"mode":"On"}}"#);
    let mut first_round = None;
    let (balanced, requested) = wait_for(
        Duration::from_secs(180),
        "the spread at most 0.10 with every move over",
        || {
            let status = rebalance_status(&operator);
            let requested = status["movesRequested"].as_u64()?;
            if requested > 0 && first_round.is_none() {
                first_round = Some(plan_of(&status));
            }
            let statuses = operator.statuses(&namespace);
            let still = statuses
                .values()
                .all(|s| s["phase"] == "Running" && s["move"].is_null());
            (status["mode"] == "On"
                && requested > 0
                && still
                && status["moves"].as_array().is_none_or(Vec::is_empty)
                && status["spread"].as_f64()? <= 0.10)
                .then_some((status, requested))
        },
    );
    println!(
        "On: {requested} moves, spread {} after {:.1} s in {} rounds ({})",
        balanced["spread"],
        on_at.elapsed().as_secs_f64(),
        balanced["rounds"].as_u64().unwrap() - dry_rounds,
        balanced["message"]
    );
    assert_eq!(
        first_round.as_ref(),
        Some(&planned),
        "the first round's plan is the dry run's"
    );
    let after = settled(&operator, &namespace, 14);
    for (name, _, to) in &planned {
        assert_eq!(&after[name], to, "{name}: {after:?}");
    }
    assert_eq!(after["pinned1"], "node1");
    assert_eq!(after["stays1"], "node1");
    let web_moved = after
        .iter()
        .filter(|(name, member)| name.starts_with("web") && *member != "node1")
        .count();
    assert!(
        web_moved >= 2,
        "the set's children moved over rounds: {after:?}"
    );

    // Ten more rounds without a move.
    let rounds = balanced["rounds"].as_u64().unwrap();
    let quiet = wait_for(Duration::from_secs(60), "ten more rounds", || {
        let status = rebalance_status(&operator);
        (status["rounds"].as_u64()? >= rounds + 10).then_some(status)
    });
    assert_eq!(quiet["movesRequested"].as_u64(), Some(requested), "{quiet}");
    assert_eq!(settled(&operator, &namespace, 14), after);
    let most_down = unavailability.most();
    assert!(
        most_down <= 1,
        "{most_down} of the set's children down at once"
    );

    // The moves are told as Events, each instance once in LXD where its status says.
    let moved = operator.events_with_reason(&namespace, "Moved");
    assert_eq!(moved.lines().count() as u64, requested, "{moved}");
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(instances.len(), 14);
    let statuses = operator.statuses(&namespace);
    for (name, _, to) in &planned {
        let explanation = statuses[name]["placement"]["explanation"].as_str().unwrap();
        assert!(
            explanation.contains("rebalancer") && explanation.contains(to.as_str()),
            "{name}: {explanation}"
        );
    }
    let told = operator.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=Rebalancing",
        "-o",
        "name",
    ]);
    // Rounds that moved: one Event (a series, as Kubernetes' recorder counts repeats).
    assert_eq!(told.lines().count(), 1, "{told}");
    let (_, metrics) = http_get(&format!(
        "{}/metrics",
        operator.metrics_url.clone().unwrap()
    ));
    let asked =
        format!("lxd_operator_rebalance_moves_total{{cluster=\"local\",mode=\"On\"}} {requested}");
    assert!(
        metrics.lines().any(|l| l == asked),
        "no {asked} in\n{metrics}"
    );
    let annotated = operator
        .containers(&namespace)
        .iter()
        .filter(|c| !c["metadata"]["annotations"][MOVE_TO_ANNOTATION].is_null())
        .count();
    assert_eq!(annotated as u64, requested, "containers asked to move");

    operator.kubectl_ok(&["delete", "lxdcs", "web", "-n", &namespace, "--timeout=120s"]);
    operator.delete_containers(&namespace, Duration::from_secs(120));
    wait_for(Duration::from_secs(120), "every instance gone", || {
        managed_instances(cluster, &namespace)
            .is_empty()
            .then_some(())
    });
    println!("whole story in {:.1} s", started.elapsed().as_secs_f64());
}
