//! `hack/bench rollout N`: how long N containers take to be Running
//! - through the operator (N LxdContainers applied at once with kubectl),
//! - by a sequential `lxc launch` loop (what a user scripts),
//! - by N concurrent direct REST creates and starts without the operator (the limit: LXD's own
//!   throughput on this machine),
//!
//! on the same cluster in the same run, printed with the ratios.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use lxd_operator::lxd::types::{StateAction, Target};
use lxd_operator_crds::LxdContainer;
use lxd_operator_tests::operator::Operator;
use lxd_operator_tests::{TestCluster, busybox, managed_instances, unique_name};

fn delete_all(cluster: &TestCluster, names: &[String]) {
    std::thread::scope(|scope| {
        for chunk in names.chunks(names.len().div_ceil(8).max(1)) {
            scope.spawn(move || {
                for name in chunk {
                    let _ = cluster.lxc_on(0, &["delete", "--force", name]);
                }
            });
        }
    });
}

fn through_operator(cluster: &TestCluster, n: usize) -> Duration {
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("bench");
    let containers: Vec<LxdContainer> = (0..n)
        .map(|i| {
            LxdContainer::builder(&format!("b{i}"))
                .namespace(&namespace)
                .build()
        })
        .collect();
    let started = Instant::now();
    operator.apply_containers(&containers);
    // Waited for on the operator's Ready conditions, through a watch of the API: polling
    // LXD's full instance list would load LXD in this way only.
    wait_until_ready(&operator, &namespace, n);
    let elapsed = started.elapsed();
    let running = managed_instances(cluster, &namespace)
        .iter()
        .filter(|i| i.status == "Running")
        .count();
    assert_eq!(running, n, "Ready in the API, Running in LXD");
    let names: Vec<String> = managed_instances(cluster, &namespace)
        .into_iter()
        .map(|i| i.name)
        .collect();
    drop(operator);
    delete_all(cluster, &names);
    elapsed
}

/// Returns once `n` LxdContainers of `namespace` report `Ready=True`.
fn wait_until_ready(operator: &Operator, namespace: &str, n: usize) {
    use futures::TryStreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use lxd_operator_crds::LxdContainer;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let api: kube::Api<LxdContainer> =
            kube::Api::namespaced(operator.kube_client().await, namespace);
        let mut changes =
            std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
        let mut ready = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while ready.len() < n {
            let container = tokio::time::timeout_at(deadline, changes.try_next())
                .await
                .expect("every container Ready within 10 minutes")
                .unwrap()
                .expect("the watch goes on");
            let is_ready = container.status.as_ref().is_some_and(|status| {
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            let name = container.metadata.name.clone().unwrap_or_default();
            if is_ready {
                ready.insert(name);
            } else {
                ready.remove(&name);
            }
        }
    });
}

fn sequential_lxc(cluster: &TestCluster, n: usize) -> Duration {
    let names: Vec<String> = (0..n).map(|i| unique_name(&format!("seq{i}"))).collect();
    let started = Instant::now();
    for (i, name) in names.iter().enumerate() {
        cluster.lxc(&[
            "launch",
            "busybox",
            name,
            "--target",
            &cluster.members[i % cluster.members.len()],
            "--quiet",
        ]);
    }
    let elapsed = started.elapsed();
    delete_all(cluster, &names);
    elapsed
}

fn concurrent_rest(cluster: &TestCluster, n: usize) -> Duration {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = cluster.client_all();
    let names: Vec<String> = (0..n).map(|i| unique_name(&format!("rest{i}"))).collect();
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let client = client.clone();
                let member = cluster.members[i % cluster.members.len()].clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let handle = client
                        .create_instance(&busybox(&name), &Target::Member(member))
                        .await
                        .unwrap();
                    client
                        .wait(&handle, Duration::from_secs(600))
                        .await
                        .unwrap();
                    let handle = client
                        .change_state(&name, StateAction::Start, None, false)
                        .await
                        .unwrap();
                    client
                        .wait(&handle, Duration::from_secs(600))
                        .await
                        .unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let elapsed = started.elapsed();
    delete_all(cluster, &names);
    elapsed
}

fn main() {
    // `bench-rollout N`: every way, one after the other, on the cluster as it is;
    // `bench-rollout <direct|sequential|operator> N`: one way, printing its seconds (hack/bench
    // runs each on a fresh cluster, as a long-used LXD 5.0 cluster slows down).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (phase, n) = match args.as_slice() {
        [phase, n] => (Some(phase.as_str()), n.parse().unwrap_or(60)),
        [n] => (None, n.parse().unwrap_or(60)),
        _ => (None, 60),
    };
    let cluster = TestCluster::get();
    match phase {
        Some("direct") => println!("{:.2}", concurrent_rest(cluster, n).as_secs_f64()),
        Some("sequential") => println!("{:.2}", sequential_lxc(cluster, n).as_secs_f64()),
        Some("operator") => println!("{:.2}", through_operator(cluster, n).as_secs_f64()),
        Some(other) => panic!("unknown phase {other}: direct, sequential or operator"),
        None => all_phases(cluster, n),
    }
}

fn all_phases(cluster: &TestCluster, n: usize) {
    println!(
        "rollout of {n} busybox containers on {} members",
        cluster.members.len()
    );
    let limit = concurrent_rest(cluster, n);
    println!(
        "  direct concurrent REST creates (the limit): {:>7.2} s",
        limit.as_secs_f64()
    );
    let sequential = sequential_lxc(cluster, n);
    println!(
        "  sequential lxc launch loop:                 {:>7.2} s",
        sequential.as_secs_f64()
    );
    let operator = through_operator(cluster, n);
    println!(
        "  through lxd-operator (kubectl apply):       {:>7.2} s",
        operator.as_secs_f64()
    );
    println!(
        "  operator / direct concurrent: {:.2} (target <= 1.15)",
        operator.as_secs_f64() / limit.as_secs_f64()
    );
    println!(
        "  operator / sequential loop:   {:.2} (target < 1)",
        operator.as_secs_f64() / sequential.as_secs_f64()
    );
}
