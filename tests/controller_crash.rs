//! Crash safety: while 40 containers roll out, the operator is killed with SIGKILL five times
//! at random moments and restarted. At the end there are exactly 40 managed instances, all
//! Running, none duplicated, none orphaned; deleting them all leaves none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{TestCluster, managed_instances, numbered_containers};

/// A pause between `low` and `high` milliseconds, different each run.
fn random_pause(low: u64, high: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(low + u64::from(nanos) % (high - low))
}

const COUNT: usize = 40;

#[test]
fn forty_containers_survive_five_crashes_of_the_operator() {
    let cluster = TestCluster::get();
    let mut operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("crash");
    let containers = numbered_containers(&namespace, "r", COUNT, |c| c);
    let started = Instant::now();
    operator.apply_containers(&containers);
    for crash in 1..=5 {
        std::thread::sleep(random_pause(300, 2500));
        let made = managed_instances(cluster, &namespace).len();
        println!(
            "crash {crash} at {:?}, {made} instances so far",
            started.elapsed()
        );
        operator = operator.crash_and_restart();
    }
    let uids: BTreeMap<String, String> =
        wait_for(Duration::from_secs(180), "every container Running", || {
            let items = operator.containers(&namespace);
            let running = items
                .iter()
                .filter(|i| i["status"]["phase"] == "Running")
                .count();
            (running == COUNT).then(|| {
                items
                    .iter()
                    .map(|i| {
                        (
                            i["metadata"]["uid"].as_str().unwrap().to_owned(),
                            i["metadata"]["name"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
        });
    println!("{COUNT} Running after {:?}", started.elapsed());
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(
        instances.len(),
        COUNT,
        "exactly {COUNT} instances: {instances:?}"
    );
    assert!(
        instances.iter().all(|i| i.status == "Running"),
        "{instances:?}"
    );
    let instance_uids: BTreeSet<&str> = instances.iter().map(|i| i.uid.as_str()).collect();
    assert_eq!(
        instance_uids.len(),
        COUNT,
        "an LxdContainer has two instances"
    );
    for instance in &instances {
        assert_eq!(
            uids.get(&instance.uid),
            Some(&instance.owner_name),
            "orphan: {instance:?}"
        );
    }
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}
