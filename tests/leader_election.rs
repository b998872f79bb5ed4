//! High availability: two `lxd-operator run` replicas against the embedded API server elect one
//! leader through a Lease; only it reconciles. SIGKILL of the leader hands over within the lease
//! duration, and containers keep converging.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lxd_operator_crds::LxdContainer;
use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use lxd_operator_tests::{
    TestCluster, cluster_manifest, http_get, managed_instances, operator_binary,
};

const LEASE_SECONDS: u64 = 4;

struct Replica {
    child: Child,
    metrics_url: String,
}

impl Replica {
    fn start(api: &Operator, identity: &str) -> Replica {
        let mut child = Command::new(operator_binary())
            .args([
                "run",
                "--metrics-addr",
                "127.0.0.1:0",
                "--leader-election",
                "--lease-name",
                "lxd-operator-test",
                "--lease-namespace",
                "default",
            ])
            .args([
                "--lease-identity",
                identity,
                "--lease-duration-seconds",
                &LEASE_SECONDS.to_string(),
                "--lease-renew-seconds",
                "1",
            ])
            .env("KUBECONFIG", api.kubeconfig())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(api.data_dir().join(format!("{identity}.log"))).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let metrics_url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix("metrics and health on ")
                    .map(str::to_owned)
            })
            .expect("the replica prints its metrics address");
        // Keep reading, so that the replica never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Replica { child, metrics_url }
    }

    fn is_leader(&self) -> bool {
        let (_, body) = http_get(&format!("{}/metrics", self.metrics_url));
        body.lines().any(|line| line == "lxd_operator_leader 1")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running(cluster: &TestCluster, namespace: &str, owner: &str) -> bool {
    managed_instances(cluster, namespace)
        .iter()
        .any(|i| i.owner_name == owner && i.status == "Running")
}

#[test]
fn one_replica_leads_and_a_killed_leader_is_replaced_within_the_lease_duration() {
    let cluster = TestCluster::get();
    let api = Operator::start(Mode::Apiserver);
    api.apply(&cluster_manifest());
    let namespace = api.namespace("ha");

    let first = Replica::start(&api, "replica-a");
    let second = Replica::start(&api, "replica-b");
    let first_leads = wait_for(Duration::from_secs(20), "a leader", || {
        match (first.is_leader(), second.is_leader()) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            (true, true) => panic!("two leaders"),
            (false, false) => None,
        }
    });
    let (leader, standby) = if first_leads {
        (first, second)
    } else {
        (second, first)
    };
    let holder = api.kubectl_ok(&[
        "get",
        "lease",
        "lxd-operator-test",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(holder.starts_with("replica-"), "{holder}");

    api.apply_containers(&[LxdContainer::builder("before")
        .namespace(&namespace)
        .build()]);
    wait_for(
        Duration::from_secs(60),
        "the leader to run the first container",
        || running(cluster, &namespace, "before").then_some(()),
    );
    assert!(!standby.is_leader(), "the standby must not reconcile");

    let killed = Instant::now();
    drop(leader);
    wait_for(
        Duration::from_secs(LEASE_SECONDS * 3),
        "the standby to take over",
        || standby.is_leader().then_some(()),
    );
    let handover = killed.elapsed();
    println!("handover after {handover:?} (lease {LEASE_SECONDS} s)");
    assert!(
        handover < Duration::from_secs(LEASE_SECONDS + 3),
        "handover took {handover:?}"
    );

    api.apply_containers(&[LxdContainer::builder("after").namespace(&namespace).build()]);
    wait_for(
        Duration::from_secs(60),
        "the new leader to run the second container",
        || running(cluster, &namespace, "after").then_some(()),
    );
    api.delete_containers(&namespace, Duration::from_secs(60));
    assert!(managed_instances(cluster, &namespace).is_empty());
}
