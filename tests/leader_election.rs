//! High availability: two `lxd-operator run` replicas against the embedded API server elect one
//! leader through a Lease; only it reconciles. SIGKILL of the leader hands over within the lease
//! duration, and containers keep converging. A leader paused past its lease (SIGSTOP) is
//! replaced, and when it wakes it changes nothing and exits instead of leading beside the new
//! one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lxd_operator_crds::LxdContainer;
use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use lxd_operator_tests::{
    Paused, TestCluster, cluster_manifest, http_get, managed_instances, operator_binary,
};

const LEASE_SECONDS: u64 = 4;

struct Replica {
    child: Child,
    metrics_url: String,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(api: &Operator, identity: &str) -> Replica {
        let log = api.data_dir().join(format!("{identity}.log"));
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
                "--lease-renew-deadline-seconds",
                &(LEASE_SECONDS - 1).to_string(),
                "--lease-renew-seconds",
                "1",
            ])
            .env("KUBECONFIG", api.kubeconfig())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
        Replica {
            child,
            metrics_url,
            log,
        }
    }

    fn exits_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

    let (leader, standby) = elect(&api, "replica-a", "replica-b");
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

fn elect(api: &Operator, a: &str, b: &str) -> (Replica, Replica) {
    let first = Replica::start(api, a);
    let second = Replica::start(api, b);
    let first_leads = wait_for(Duration::from_secs(20), "a leader", || {
        match (first.is_leader(), second.is_leader()) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            (true, true) => panic!("two leaders"),
            (false, false) => None,
        }
    });
    if first_leads {
        (first, second)
    } else {
        (second, first)
    }
}

#[test]
fn a_leader_paused_past_its_lease_is_replaced_and_on_waking_changes_nothing_and_exits() {
    let cluster = TestCluster::get();
    let api = Operator::start(Mode::Apiserver);
    api.apply(&cluster_manifest());
    let namespace = api.namespace("paused");
    let (mut leader, standby) = elect(&api, "pause-a", "pause-b");
    api.apply_containers(&[LxdContainer::builder("before")
        .namespace(&namespace)
        .build()]);
    wait_for(Duration::from_secs(60), "the leader to run it", || {
        running(cluster, &namespace, "before").then_some(())
    });

    // The leader stops dead, holding the lease; nothing tells the standby.
    let pause = Paused::process(leader.child.id());
    let paused = Instant::now();
    wait_for(
        Duration::from_secs(LEASE_SECONDS * 4),
        "the standby to take over from the paused leader",
        || standby.is_leader().then_some(()),
    );
    let takeover = paused.elapsed();
    println!("takeover after {takeover:?} (lease {LEASE_SECONDS} s)");
    // The standby counts from when it saw the last renewal, up to a renewal before the pause.
    assert!(
        takeover >= Duration::from_secs(LEASE_SECONDS - 1),
        "taken over after {takeover:?}, before the lease could have run out"
    );
    api.apply_containers(&[LxdContainer::builder("during")
        .namespace(&namespace)
        .build()]);
    wait_for(Duration::from_secs(60), "the new leader to run it", || {
        running(cluster, &namespace, "during").then_some(())
    });

    // It wakes believing it leads: it must find out from its own clock, write nothing, and go.
    drop(pause);
    let exited = leader.exits_within(Duration::from_secs(10));
    assert!(
        exited.is_some_and(|status| !status.success()),
        "the woken leader went on: {exited:?}\n{}",
        leader.log()
    );
    assert!(leader.log().contains("leadership lost"), "{}", leader.log());
    let holder = api.kubectl_ok(&[
        "get",
        "lease",
        "lxd-operator-test",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(
        standby.is_leader(),
        "the new leader lost the lease to {holder}"
    );
    let instances = managed_instances(cluster, &namespace);
    let mut owners: Vec<&str> = instances.iter().map(|i| i.owner_name.as_str()).collect();
    owners.sort_unstable();
    assert_eq!(owners, ["before", "during"], "{instances:?}");
    api.delete_containers(&namespace, Duration::from_secs(60));
    assert!(managed_instances(cluster, &namespace).is_empty());
}

#[test]
fn a_leader_that_cannot_renew_stops_at_its_renew_deadline_even_while_the_api_hangs() {
    let api = Operator::start(Mode::Apiserver);
    api.apply(&cluster_manifest());
    let (mut leader, _standby) = elect(&api, "stuck-a", "stuck-b");

    // The API server stops answering and keeps its connections open: renewals hang.
    let paused = Paused::process(api.pid());
    let stopped = Instant::now();
    let exited = leader.exits_within(Duration::from_secs(LEASE_SECONDS * 3));
    let waited = stopped.elapsed();
    drop(paused);
    assert!(
        exited.is_some(),
        "the leader went on leading without a renewal\n{}",
        leader.log()
    );
    println!(
        "the leader stopped {waited:?} after the API hung (renew deadline {} s)",
        LEASE_SECONDS - 1
    );
    assert!(
        waited <= Duration::from_secs(LEASE_SECONDS + 1),
        "stopped after {waited:?}, past the renew deadline"
    );
    assert!(leader.log().contains("leadership lost"), "{}", leader.log());
}
