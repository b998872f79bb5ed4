//! A member's daemon dies under running containers (`hack/lxd-cluster.sh stop-member 2`):
//! with `onMemberFailure: Reschedule` they are created anew on the other members after the
//! grace period, and what was left behind on the member is deleted when it returns; with
//! `Wait` they stay bound to it and run there again once it is back. Each test stops a member,
//! so they run one at a time, in a binary of their own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lxd_operator_crds::container::{MemberFailurePolicy, PlacementStrategy};
use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{TestCluster, condition, managed_instances, numbered_containers};
use serde_json::Value;

static ONE_MEMBER_DOWN_AT_A_TIME: Mutex<()> = Mutex::new(());

const FAILED: &str = "node2";
const COUNT: usize = 12;
const GRACE_SECONDS: u64 = 20;

fn all_running(statuses: &BTreeMap<String, Value>, count: usize) -> bool {
    statuses.len() == count && statuses.values().all(|s| s["phase"] == "Running")
}

/// Applies `count` spread containers and waits for them all Running; returns the names of
/// those on the member that will fail.
fn running_spread(
    operator: &Operator,
    namespace: &str,
    policy: MemberFailurePolicy,
) -> BTreeSet<String> {
    // The member's failure shows in the cluster's status sooner than at the default interval.
    operator.patch_cluster(r#"{"memberSyncIntervalSeconds":5}"#);
    operator.apply_containers(&numbered_containers(namespace, "c", COUNT, |c| {
        c.strategy(PlacementStrategy::Spread)
            .on_member_failure(policy, Some(GRACE_SECONDS as u32))
    }));
    let statuses = wait_for(Duration::from_secs(180), "every container Running", || {
        let statuses = operator.statuses(namespace);
        all_running(&statuses, COUNT).then_some(statuses)
    });
    let on_failed: BTreeSet<String> = statuses
        .iter()
        .filter(|(_, s)| s["member"] == FAILED)
        .map(|(name, _)| name.clone())
        .collect();
    assert!(!on_failed.is_empty(), "spread puts some on {FAILED}");
    on_failed
}

fn restart_member(cluster: &TestCluster) {
    cluster.script(&["start-member", "2"]);
    cluster.wait_all_online(Duration::from_secs(120));
}

#[test]
fn containers_that_reschedule_leave_a_failed_member_and_what_was_left_behind_is_deleted_on_its_return()
 {
    let _one = ONE_MEMBER_DOWN_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("reschedule");
    let on_failed = running_spread(&operator, &namespace, MemberFailurePolicy::Reschedule);

    let killed = Instant::now();
    cluster.script(&["stop-member", "2"]);
    // Within the grace period plus a minute, every container runs on another member.
    let statuses = wait_for(
        Duration::from_secs(GRACE_SECONDS + 60),
        "every container Running off the failed member",
        || {
            let statuses = operator.statuses(&namespace);
            (all_running(&statuses, COUNT) && statuses.values().all(|s| s["member"] != FAILED))
                .then_some(statuses)
        },
    );
    println!(
        "{} containers rescheduled off {FAILED}, all Running {:.1} s after its daemon was killed (grace {GRACE_SECONDS} s)",
        on_failed.len(),
        killed.elapsed().as_secs_f64()
    );
    for name in &on_failed {
        let status = &statuses[name];
        assert_eq!(status["incarnation"], 1, "{name}: {status}");
        let left = &status["leftBehind"][0];
        assert_eq!(left["member"], FAILED, "{name}: {status}");
        assert!(
            left["reason"]
                .as_str()
                .unwrap()
                .contains("grace period 20 s"),
            "{left}"
        );
        assert!(
            status["instanceName"].as_str().unwrap().ends_with("-r1"),
            "{status}"
        );
    }
    let events = operator.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &namespace,
        "--field-selector",
        "reason=Rescheduled",
        "-o",
        "name",
    ]);
    assert_eq!(events.lines().count(), on_failed.len(), "{events}");

    // The member returns: what was left there is deleted, each container exists once.
    restart_member(cluster);
    let back = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "no instance of ours left on the returned member",
        || {
            let instances = managed_instances(cluster, &namespace);
            let statuses = operator.statuses(&namespace);
            let cleared = statuses
                .values()
                .all(|s| s["leftBehind"].as_array().is_none_or(Vec::is_empty));
            (cleared && instances.iter().all(|i| i.location != FAILED)).then_some(())
        },
    );
    println!(
        "instances left behind deleted {:.1} s after {FAILED} was back online",
        back.elapsed().as_secs_f64()
    );
    let instances = managed_instances(cluster, &namespace);
    let uids: BTreeSet<&str> = instances.iter().map(|i| i.uid.as_str()).collect();
    assert_eq!(instances.len(), COUNT, "{instances:?}");
    assert_eq!(uids.len(), COUNT, "a container exists twice: {instances:?}");
    assert!(
        instances.iter().all(|i| i.status == "Running"),
        "{instances:?}"
    );
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}

#[test]
fn containers_that_wait_stay_bound_to_a_failed_member_and_run_there_again_when_it_returns() {
    let _one = ONE_MEMBER_DOWN_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("wait");
    let on_failed = running_spread(&operator, &namespace, MemberFailurePolicy::Wait);

    cluster.script(&["stop-member", "2"]);
    // They say what they wait for, past the grace period, and stay where they are.
    let waiting = wait_for(
        Duration::from_secs(90),
        "the containers on the failed member waiting for it",
        || {
            let statuses = operator.statuses(&namespace);
            on_failed
                .iter()
                .all(|name| {
                    condition(&statuses[name], "Ready")
                        .is_some_and(|ready| ready["reason"] == "MemberOffline")
                })
                .then_some(statuses)
        },
    );
    for name in &on_failed {
        let status = &waiting[name];
        assert_eq!(status["phase"], "Unknown", "{status}");
        let ready = condition(status, "Ready").unwrap();
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("onMemberFailure is Wait"),
            "{ready}"
        );
    }
    std::thread::sleep(Duration::from_secs(GRACE_SECONDS + 5));
    let statuses = operator.statuses(&namespace);
    for name in &on_failed {
        assert_eq!(statuses[name]["member"], FAILED, "{}", statuses[name]);
        assert!(
            statuses[name]["incarnation"].is_null(),
            "{}",
            statuses[name]
        );
    }

    restart_member(cluster);
    let statuses = wait_for(
        Duration::from_secs(60),
        "every container Running again",
        || {
            let statuses = operator.statuses(&namespace);
            all_running(&statuses, COUNT).then_some(statuses)
        },
    );
    for name in &on_failed {
        assert_eq!(statuses[name]["member"], FAILED, "{}", statuses[name]);
    }
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(instances.len(), COUNT, "{instances:?}");
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}
