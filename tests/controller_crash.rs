//! Crash safety: while 30 containers roll out, the operator is killed with SIGKILL three times
//! at random moments and restarted. At the end there are exactly 30 managed instances, all
//! Running, none duplicated, none orphaned.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use lxd_operator_tests::{TestCluster, cluster_manifest, managed_instances, unique_name};
use serde_json::Value;

/// A pause between `low` and `high` milliseconds, different each run.
fn random_pause(low: u64, high: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(low + u64::from(nanos) % (high - low))
}

#[test]
fn thirty_containers_survive_three_crashes_of_the_operator() {
    let cluster = TestCluster::get();
    let mut operator = Operator::start(Mode::Standalone);
    operator.apply(&cluster_manifest());
    let namespace = unique_name("crash");
    operator.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
    ));
    let manifests: Vec<String> = (1..=30)
        .map(|i| format!("apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainer\nmetadata: {{name: r{i}, namespace: {namespace}}}\nspec:\n  clusterRef: {{name: local}}\n  image: {{alias: busybox}}\n"))
        .collect();
    let started = Instant::now();
    operator.apply(&manifests.join("---\n"));
    for crash in 1..=3 {
        std::thread::sleep(random_pause(300, 2500));
        let made = managed_instances(cluster, &namespace).len();
        println!(
            "crash {crash} at {:?}, {made} instances so far",
            started.elapsed()
        );
        operator = operator.crash_and_restart();
    }
    let uids: BTreeMap<String, String> =
        wait_for(Duration::from_secs(120), "30 Running containers", || {
            let list: Value = serde_json::from_str(
                &operator.kubectl_ok(&["get", "lxdc", "-n", &namespace, "-o", "json"]),
            )
            .unwrap();
            let items = list["items"].as_array().unwrap();
            let running = items
                .iter()
                .filter(|i| i["status"]["phase"] == "Running")
                .count();
            (running == 30).then(|| {
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
    println!("30 Running after {:?}", started.elapsed());
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(instances.len(), 30, "exactly 30 instances: {instances:?}");
    assert!(
        instances.iter().all(|i| i.status == "Running"),
        "{instances:?}"
    );
    let instance_uids: BTreeSet<&str> = instances.iter().map(|i| i.uid.as_str()).collect();
    assert_eq!(instance_uids.len(), 30, "an LxdContainer has two instances");
    for instance in &instances {
        assert_eq!(
            uids.get(&instance.uid),
            Some(&instance.owner_name),
            "orphan: {instance:?}"
        );
    }
    operator.kubectl_ok(&[
        "delete",
        "lxdc",
        "--all",
        "-n",
        &namespace,
        "--timeout=120s",
    ]);
    assert!(managed_instances(cluster, &namespace).is_empty());
}
