//! Draining a member before maintenance: `spec.drainedMembers` on the LxdCluster moves each of
//! our containers off it (stop, LXD's cold migration, start), a bounded number at once, and the
//! member then takes no new containers until it is removed from the list. A SIGKILL of the
//! operator in the middle of a drain loses nothing: the restarted operator finishes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lxd_operator_crds::container::PlacementStrategy;
use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use lxd_operator_tests::{TestCluster, managed_instances, numbered_containers};
use serde_json::Value;

static ONE_DRAIN_AT_A_TIME: Mutex<()> = Mutex::new(());

const DRAINED: &str = "node2";

/// Pins `count` containers to the member to be drained (then unpins them: placement is free
/// to choose again, and the drain must move them) and waits for them Running there.
fn running_on_drained(operator: &Operator, namespace: &str, count: usize) {
    let pinned = numbered_containers(namespace, "d", count, |c| {
        c.strategy(PlacementStrategy::Spread).target(DRAINED)
    });
    operator.apply_containers(&pinned);
    wait_for(
        Duration::from_secs(180),
        "every container Running on the member",
        || {
            let statuses = operator.statuses(namespace);
            (statuses.len() == count
                && statuses
                    .values()
                    .all(|s| s["phase"] == "Running" && s["member"] == DRAINED))
            .then_some(())
        },
    );
    let unpinned = numbered_containers(namespace, "d", count, |c| {
        c.strategy(PlacementStrategy::Spread)
    });
    operator.apply_containers(&unpinned);
}

/// The containers all Running off the drained member, each instance once in LXD.
fn drained(operator: &Operator, cluster: &TestCluster, namespace: &str, count: usize) -> bool {
    let statuses = operator.statuses(namespace);
    let settled = statuses.len() == count
        && statuses
            .values()
            .all(|s| s["phase"] == "Running" && s["member"] != DRAINED && s["move"].is_null());
    if !settled {
        return false;
    }
    let instances = managed_instances(cluster, namespace);
    let uids: BTreeSet<&str> = instances.iter().map(|i| i.uid.as_str()).collect();
    instances.len() == count
        && uids.len() == count
        && instances
            .iter()
            .all(|i| i.location != DRAINED && i.status == "Running")
}

#[test]
fn a_drained_member_is_emptied_a_few_at_a_time_and_takes_containers_again_once_undrained() {
    let _one = ONE_DRAIN_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("drain");
    let count = 10;
    running_on_drained(&operator, &namespace, count);

    let started = Instant::now();
    operator.patch_cluster(&format!(
        r#"{{"drainedMembers":["{DRAINED}"],"maxConcurrentMoves":2}}"#
    ));
    // Never more than two down at once (not Running), each down once (for its own move),
    // until all are off the member.
    let mut most_down = 0;
    let mut was_down: BTreeMap<String, bool> = BTreeMap::new();
    let mut times_down: BTreeMap<String, usize> = BTreeMap::new();
    wait_for(Duration::from_secs(240), "the member drained", || {
        let statuses = operator.statuses(&namespace);
        let down = statuses
            .values()
            .filter(|s| s["phase"] != "Running")
            .count();
        most_down = most_down.max(down);
        for (name, status) in &statuses {
            let is_down = status["phase"] != "Running";
            if is_down && !was_down.get(name).copied().unwrap_or(false) {
                *times_down.entry(name.clone()).or_default() += 1;
            }
            was_down.insert(name.clone(), is_down);
        }
        drained(&operator, cluster, &namespace, count).then_some(())
    });
    assert!(
        times_down.values().all(|&times| times <= 1),
        "a container went down more than once: {times_down:?}"
    );
    println!(
        "{count} containers moved off {DRAINED} in {:.1} s; at most {most_down} down at once",
        started.elapsed().as_secs_f64()
    );
    assert!(most_down <= 2, "{most_down} down at once");
    let moved = operator.events_with_reason(&namespace, "Moved");
    assert_eq!(moved.lines().count(), count, "{moved}");
    let progress = wait_for(
        Duration::from_secs(30),
        "the cluster's status says drained",
        || {
            let text = operator.kubectl_ok(&[
                "get",
                "lxdcl",
                "local",
                "-o",
                &format!("jsonpath={{.status.members[?(@.name=='{DRAINED}')].drain}}"),
            ]);
            let progress: Value = serde_json::from_str(&text).ok()?;
            (progress["remaining"] == 0).then_some(progress)
        },
    );
    assert_eq!(progress["message"], "drained", "{progress}");

    // Still drained: a new container that could only go there is Unschedulable.
    operator.apply_containers(&numbered_containers(&namespace, "late", 1, |c| {
        c.target(DRAINED)
    }));
    wait_for(
        Duration::from_secs(30),
        "the pinned one Unschedulable",
        || (operator.statuses(&namespace)["late1"]["phase"] == "Unschedulable").then_some(()),
    );
    operator.patch_cluster(r#"{"drainedMembers":[]}"#);
    wait_for(
        Duration::from_secs(60),
        "the pinned one Running there once undrained",
        || {
            let status = &operator.statuses(&namespace)["late1"];
            (status["phase"] == "Running" && status["member"] == DRAINED).then_some(())
        },
    );
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}

#[test]
fn a_drain_survives_the_operator_killed_in_the_middle_three_times() {
    let _one = ONE_DRAIN_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let mut operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("draincrash");
    let count = 8;
    running_on_drained(&operator, &namespace, count);
    operator.patch_cluster(&format!(
        r#"{{"drainedMembers":["{DRAINED}"],"maxConcurrentMoves":2}}"#
    ));
    for kill in 1..=3 {
        // Kill it while a move is under way (a container in phase Moving), or after a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline
            && !operator
                .statuses(&namespace)
                .values()
                .any(|s| s["phase"] == "Moving")
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300 * kill));
        let statuses = operator.statuses(&namespace);
        let moving = statuses.values().filter(|s| !s["move"].is_null()).count();
        let moved = statuses.values().filter(|s| s["member"] != DRAINED).count();
        println!("SIGKILL {kill}: {moving} moving, {moved} of {count} moved");
        assert!(moving <= 2, "{moving} moves at once");
        operator = operator.crash_and_restart();
    }
    wait_for(Duration::from_secs(240), "the member drained", || {
        drained(&operator, cluster, &namespace, count).then_some(())
    });
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}

/// Writes `status.move` (and the member it leaves) as the operator does before it stops the
/// instance.
fn record_move(operator: &Operator, namespace: &str, name: &str, from: &str, to: &str) {
    let status = format!(
        r#"{{"status":{{"phase":"Moving","member":"{from}","move":{{"from":"{from}","to":"{to}","reason":"member {from} is drained","startedAt":"2026-12-04T00:00:00Z"}}}}}}"#
    );
    operator.patch_status("lxdc", namespace, name, &status);
}

// LXD 5.0 moves an instance in one operation: it copies it to the new member as
// `lxd-move-of-<uuid>` (config, and so our uid, included), deletes the original and renames the
// copy. A process killed while that runs must not take the moment the name is missing for a
// lost instance, and a move that died half-way is finished or cleaned up, never duplicated.
#[test]
fn a_move_that_died_half_way_is_finished_or_cleaned_up_by_the_restarted_operator() {
    let _one = ONE_DRAIN_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("halfmove");
    running_on_drained(&operator, &namespace, 2);
    // The controller dies; the API stays up for kubectl.
    let operator = operator.crash_and_restart_as(Mode::Apiserver);
    let instances = managed_instances(cluster, &namespace);
    let instance_of = |name: &str| {
        instances
            .iter()
            .find(|i| i.owner_name == name)
            .map(|i| i.name.clone())
            .unwrap()
    };
    let (first, second) = (instance_of("d1"), instance_of("d2"));
    // d1: the original is gone, its copy on node3 was never renamed.
    cluster.lxc(&["stop", "--force", &first]);
    cluster.lxc(&["move", &first, "--target", "node3"]);
    cluster.lxc(&["move", &first, "lxd-move-of-halfmove-test-1"]);
    // d2: the copy is on node3, the original still on node2.
    cluster.lxc(&["stop", "--force", &second]);
    cluster.lxc(&[
        "copy",
        &second,
        "lxd-move-of-halfmove-test-2",
        "--target",
        "node3",
    ]);
    operator.patch_cluster(&format!(
        r#"{{"drainedMembers":["{DRAINED}"],"maxConcurrentMoves":2}}"#
    ));
    record_move(&operator, &namespace, "d1", DRAINED, "node3");
    record_move(&operator, &namespace, "d2", DRAINED, "node3");

    let operator = operator.crash_and_restart_as(Mode::Standalone);
    wait_for(Duration::from_secs(120), "both moved and Running", || {
        drained(&operator, cluster, &namespace, 2).then_some(())
    });
    let instances = managed_instances(cluster, &namespace);
    let mut names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, [first.as_str(), second.as_str()], "{instances:?}");
    assert!(
        instances.iter().all(|i| i.location == "node3"),
        "{instances:?}"
    );
    operator.patch_cluster(r#"{"drainedMembers":[]}"#);
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}
