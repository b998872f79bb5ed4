//! `hack/bench drain`: emptying one member of N running containers, one way per call:
//! - `operator N K`: N LxdContainers on node2, drained through the LxdCluster's
//!   `drainedMembers` with `maxConcurrentMoves: K`;
//! - `direct N K`: the same sequence done directly, K containers at once with concurrent REST
//!   calls: graceful stop (30 s, then forced, as the operator does), move to the other members
//!   in turn, start (the baseline).
//!
//! Each prints every container's downtime (median, max), then a last line
//! `result <seconds> <median downtime> <max downtime>` for the script. Setting up (creating
//! the containers on node2) is not timed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lxd_operator::lxd::LxdClient;
use lxd_operator::lxd::types::{StateAction, Target};
use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::container::{ContainerPhase, PlacementStrategy};
use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{
    TestCluster, busybox, managed_instances, numbered_containers, unique_name,
};

const DRAINED: &str = "node2";
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(600);

struct Outcome {
    elapsed: Duration,
    downtimes: Vec<Duration>,
}

fn print(outcome: &Outcome) {
    let mut downtimes = outcome.downtimes.clone();
    downtimes.sort();
    let median = downtimes
        .get(downtimes.len() / 2)
        .copied()
        .unwrap_or_default();
    let max = downtimes.last().copied().unwrap_or_default();
    println!(
        "    downtime per container: median {:.2} s, max {:.2} s ({} containers)",
        median.as_secs_f64(),
        max.as_secs_f64(),
        downtimes.len()
    );
    println!(
        "result {:.2} {:.2} {:.2}",
        outcome.elapsed.as_secs_f64(),
        median.as_secs_f64(),
        max.as_secs_f64()
    );
}

async fn wait(client: &LxdClient, handle: lxd_operator::lxd::OperationHandle) {
    client.wait(&handle, WAIT).await.unwrap();
}

/// Graceful stop, forced when it does not finish, as the operator stops.
async fn stop(client: &LxdClient, name: &str) {
    let handle = client
        .change_state(name, StateAction::Stop, Some(STOP_TIMEOUT), false)
        .await
        .unwrap();
    if client
        .wait(&handle, STOP_TIMEOUT + Duration::from_secs(10))
        .await
        .is_err()
    {
        let handle = client
            .change_state(name, StateAction::Stop, None, true)
            .await
            .unwrap();
        wait(client, handle).await;
    }
}

fn direct(cluster: &TestCluster, n: usize, at_once: usize) -> Outcome {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let source = cluster.client(&[1]);
    let client = cluster.client_all();
    let names: Vec<String> = (0..n).map(|i| unique_name(&format!("drain{i}"))).collect();
    runtime.block_on(async {
        for name in &names {
            let handle = source
                .create_instance(&busybox(name), &Target::Member(DRAINED.to_owned()))
                .await
                .unwrap();
            wait(&source, handle).await;
            let handle = source
                .change_state(name, StateAction::Start, None, false)
                .await
                .unwrap();
            wait(&source, handle).await;
        }
    });
    let destinations: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| *m != DRAINED)
        .cloned()
        .collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(at_once));
    let started = Instant::now();
    let downtimes = runtime.block_on(async {
        let tasks: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (source, client, slots) = (source.clone(), client.clone(), slots.clone());
                let to = destinations[i % destinations.len()].clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await.unwrap();
                    let down = Instant::now();
                    stop(&source, &name).await;
                    let handle = source.move_instance(&name, &to).await.unwrap();
                    wait(&source, handle).await;
                    let target = client.on_member(&to);
                    let handle = target
                        .change_state(&name, StateAction::Start, None, false)
                        .await
                        .unwrap();
                    wait(&target, handle).await;
                    down.elapsed()
                })
            })
            .collect();
        let mut downtimes = Vec::new();
        for task in tasks {
            downtimes.push(task.await.unwrap());
        }
        downtimes
    });
    let elapsed = started.elapsed();
    for name in &names {
        let _ = cluster.lxc_on(0, &["delete", "--force", name]);
    }
    Outcome { elapsed, downtimes }
}

fn through_operator(cluster: &TestCluster, n: usize, at_once: usize) -> Outcome {
    use futures::TryStreamExt;
    use kube::runtime::watcher;

    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("benchdrain");
    let pinned = numbered_containers(&namespace, "d", n, |c| {
        c.strategy(PlacementStrategy::Spread).target(DRAINED)
    });
    operator.apply_containers(&pinned);
    wait_for(
        Duration::from_secs(600),
        "every container Running on node2",
        || {
            let running = operator
                .containers(&namespace)
                .iter()
                .filter(|c| c["status"]["phase"] == "Running" && c["status"]["member"] == DRAINED)
                .count();
            (running == n).then_some(())
        },
    );
    operator.apply_containers(&numbered_containers(&namespace, "d", n, |c| {
        c.strategy(PlacementStrategy::Spread)
    }));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (elapsed, downtimes) = runtime.block_on(async {
        let api: kube::Api<LxdContainer> =
            kube::Api::namespaced(operator.kube_client().await, &namespace);
        let mut changes = std::pin::pin!(watcher(api, watcher::Config::default()));
        while !matches!(
            changes.try_next().await.unwrap(),
            Some(watcher::Event::InitDone)
        ) {}
        let started = Instant::now();
        operator.patch_cluster(&format!(
            r#"{{"drainedMembers":["{DRAINED}"],"maxConcurrentMoves":{at_once}}}"#
        ));
        // Each container: when it stopped running on the member, and when it ran again
        // elsewhere.
        let mut down_since: HashMap<String, Instant> = HashMap::new();
        let mut downtimes: HashMap<String, Duration> = HashMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while downtimes.len() < n {
            let event = tokio::time::timeout_at(deadline, changes.try_next())
                .await
                .expect("drained within 10 minutes")
                .unwrap()
                .expect("the watch goes on");
            let watcher::Event::Apply(container) = event else {
                continue;
            };
            let name = container.metadata.name.clone().unwrap_or_default();
            let Some(status) = container.status.as_ref() else {
                continue;
            };
            let running = status.phase == Some(ContainerPhase::Running);
            let member = status.member.as_deref().unwrap_or_default();
            if !running && member == DRAINED || status.moving.is_some() {
                down_since.entry(name.clone()).or_insert_with(Instant::now);
            }
            if running
                && member != DRAINED
                && status.moving.is_none()
                && let Some(since) = down_since.get(&name)
            {
                downtimes.entry(name).or_insert_with(|| since.elapsed());
            }
        }
        (
            started.elapsed(),
            downtimes.into_values().collect::<Vec<_>>(),
        )
    });
    let instances = managed_instances(cluster, &namespace);
    assert!(
        instances
            .iter()
            .all(|i| i.location != DRAINED && i.status == "Running"),
        "{instances:?}"
    );
    operator.delete_containers(&namespace, Duration::from_secs(300));
    Outcome { elapsed, downtimes }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize, default: usize| {
        args.get(index)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (n, at_once) = (number(1, 20), number(2, 4));
    let cluster = TestCluster::get();
    let outcome = match args.first().map(String::as_str) {
        Some("direct") => direct(cluster, n, at_once),
        Some("operator") => through_operator(cluster, n, at_once),
        _ => panic!("usage: bench-drain <operator|direct> N K"),
    };
    print(&outcome);
}
