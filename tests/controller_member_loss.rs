//! Chaos against the real cluster: one LXD member's daemon is killed while 30 containers roll
//! out. The containers not bound to it reach Running, the LxdCluster's status says the member
//! is Offline, and once it is back every container converges, none with two instances, and
//! deleting them all leaves none. One test, run alone: it stops a member.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{TestCluster, managed_instances, numbered_containers};

const COUNT: usize = 30;

fn phases(operator: &Operator, namespace: &str) -> Vec<(String, String, String)> {
    operator
        .containers(namespace)
        .iter()
        .map(|item| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
            (
                text(&item["metadata"]["name"]),
                text(&item["status"]["member"]),
                text(&item["status"]["phase"]),
            )
        })
        .collect()
}

/// Waits for every container Running; on timeout prints each one that is not, with its
/// Ready condition, and says false.
fn wait_for_or_show(operator: &Operator, namespace: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let phases = phases(operator, namespace);
        if phases.len() == COUNT && phases.iter().all(|(_, _, p)| p == "Running") {
            return true;
        }
        if Instant::now() > deadline {
            for item in operator.containers(namespace) {
                if item["status"]["phase"] != "Running" {
                    println!(
                        "not Running: {} {}",
                        item["metadata"]["name"], item["status"]
                    );
                }
            }
            // The whole log, for what the last lines do not show.
            let kept = lxd_operator_tests::repo_root().join("target/member-loss-operator.log");
            let _ = std::fs::write(&kept, operator.log());
            println!("operator log: {}", kept.display());
            println!(
                "{}",
                operator
                    .log()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// It found a bug, fixed since (`reconcile/container/husk.rs`, and the story in tests/controller.rs):
// a create in flight on the member when its daemon dies can leave an instance record whose
// storage volume LXD never made; the operator adopted it (it carries our uid) and every start
// failed with "Instance storage pool not found".
// A second bug it found (one run in three): a container bound to the member stayed Creating
// after the member returned, converging in silence (a start LXD refused was retried as 'not
// known yet', eight steps a reconcile, nothing logged). A refused start now looks for a husk,
// and a second refusal fails the reconcile with LXD's message in the Ready condition, an Event
// and a growing backoff; every step is logged at debug. On failure the whole operator log is
// kept in target/member-loss-operator.log.
#[test]
fn a_member_lost_mid_rollout_holds_up_only_its_own_containers_and_all_converge_when_it_returns() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("memberloss");
    let lost = cluster.members[2].clone();
    let started = Instant::now();
    operator.apply_containers(&numbered_containers(&namespace, "m", COUNT, |c| c));
    std::thread::sleep(Duration::from_secs(3));
    cluster.script(&["stop-member", "3"]);
    println!("{lost} stopped at {:?}", started.elapsed());

    // Containers on the other members get on with it while the member is gone.
    let bound_to_lost = wait_for(
        Duration::from_secs(180),
        "every container placed, and those not on the lost member Running",
        || {
            let phases = phases(&operator, &namespace);
            let placed = phases.len() == COUNT && phases.iter().all(|(_, m, _)| !m.is_empty());
            let others_running = phases
                .iter()
                .filter(|(_, member, _)| *member != lost)
                .all(|(_, _, phase)| phase == "Running");
            (placed && others_running).then(|| phases.iter().filter(|(_, m, _)| *m == lost).count())
        },
    );
    println!(
        "the others Running at {:?}; {bound_to_lost} bound to {lost}",
        started.elapsed()
    );
    let jsonpath = format!("jsonpath={{.status.members[?(@.name=='{lost}')].status}}");
    wait_for(
        Duration::from_secs(120),
        "the lost member Offline in the LxdCluster's status",
        || {
            let status = operator.kubectl_ok(&["get", "lxdcl", "local", "-o", &jsonpath]);
            (status.trim() == "Offline").then_some(())
        },
    );

    cluster.script(&["start-member", "3"]);
    cluster.wait_all_online(Duration::from_secs(120));
    let back = Instant::now();
    let converged = wait_for_or_show(&operator, &namespace, Duration::from_secs(180));
    assert!(
        converged,
        "not all Running {:?} after the member returned",
        back.elapsed()
    );
    println!("all Running at {:?}", started.elapsed());
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(instances.len(), COUNT, "{instances:?}");
    let uids: BTreeSet<&str> = instances.iter().map(|i| i.uid.as_str()).collect();
    assert_eq!(
        uids.len(),
        COUNT,
        "a container has two instances: {instances:?}"
    );
    operator.delete_containers(&namespace, Duration::from_secs(180));
    assert!(managed_instances(cluster, &namespace).is_empty());
}
