//! `hack/bench rollout`: how long N containers take to be Running, one way per call:
//! - `operator N`: N LxdContainers applied at once with kubectl, through the operator; prints
//!   where the time went (each container's stages, placement's waits, LXD calls per container
//!   and their latency, API writes, reconciles, CPU of the operator beside LXD's);
//! - `set N`: an LxdContainerSet of 0 replicas scaled to N with `kubectl scale`, the same
//!   breakdown;
//! - `direct N`: N concurrent REST creates and starts without the operator, every call to the
//!   first member, as a naive client does (the baseline);
//! - `paced N K`: the same, each member's calls to its own endpoint, at most K creates at once
//!   per member (0: no limit), to find the concurrency LXD is fastest at;
//! - `sequential N`: an `lxc launch` loop, as a user scripts it.
//!
//! Each prints its figures, then a last line `result <seconds> <LXD CPU seconds>` for the script.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use lxd_operator::lxd::types::{StateAction, Target};
use lxd_operator::lxd::{Intent, LxdClient, LxdError, Settlement};
use lxd_operator_crds::LxdContainer;
use lxd_operator_tests::operator::Operator;
use lxd_operator_tests::{
    TestCluster, busybox, http_get, managed_instances, process_cpu_seconds, unique_name,
};

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

/// What one way took.
struct Outcome {
    elapsed: Duration,
    lxd_cpu: f64,
}

/// Runs `way` (which returns the names it made), measured, then deletes what it made.
fn measured(cluster: &TestCluster, way: impl FnOnce() -> Vec<String>) -> Outcome {
    let cpu_before = cluster.daemons_cpu_seconds();
    let started = Instant::now();
    let names = way();
    let outcome = Outcome {
        elapsed: started.elapsed(),
        lxd_cpu: cluster.daemons_cpu_seconds() - cpu_before,
    };
    delete_all(cluster, &names);
    outcome
}

/// When the bench's watch saw each container reach a stage, from the apply.
#[derive(Default)]
struct Seen {
    placed: Option<Duration>,
    ready: Option<Duration>,
    /// Writes to the object the watch saw after its creation (finalizer, status).
    writes: usize,
}

/// How the containers are asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Through {
    /// N LxdContainers applied at once.
    Containers,
    /// One LxdContainerSet scaled from 0 to N.
    Set,
}

fn through_operator(cluster: &TestCluster, n: usize, through: Through) -> Outcome {
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("bench");
    let containers: Vec<LxdContainer> = (0..n)
        .map(|i| {
            LxdContainer::builder(&format!("b{i}"))
                .namespace(&namespace)
                .build()
        })
        .collect();
    if through == Through::Set {
        operator.apply(&format!(
            "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainerSet\nmetadata: {{name: b, namespace: {namespace}}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: b}}}}\n  template:\n    metadata: {{labels: {{app: b}}}}\n    spec: {{clusterRef: {{name: local}}, image: {{alias: busybox}}}}\n"
        ));
    }
    let metrics_before = scrape(&operator);
    let operator_cpu_before = process_cpu_seconds(operator.pid(), false);
    let lxd_cpu_before = cluster.daemons_cpu_seconds();
    let started = Instant::now();
    // Watched from before the apply, through the API (polling LXD's full instance list would
    // load LXD in this way only).
    let seen = watch_until_ready(&operator, &namespace, n, || match through {
        Through::Containers => {
            operator.apply_containers(&containers);
        }
        Through::Set => {
            operator.kubectl_ok(&[
                "scale",
                "lxdcs/b",
                "-n",
                &namespace,
                &format!("--replicas={n}"),
            ]);
        }
    });
    let elapsed = started.elapsed();
    let lxd_cpu = cluster.daemons_cpu_seconds() - lxd_cpu_before;
    let operator_cpu = process_cpu_seconds(operator.pid(), false) - operator_cpu_before;
    let metrics = scrape(&operator).since(&metrics_before);
    let instances = managed_instances(cluster, &namespace);
    let running = instances.iter().filter(|i| i.status == "Running").count();
    assert_eq!(running, n, "Ready in the API, Running in LXD");
    print_breakdown(n, &seen, &metrics, operator_cpu, lxd_cpu);
    let names: Vec<String> = instances.into_iter().map(|i| i.name).collect();
    drop(operator);
    delete_all(cluster, &names);
    Outcome { elapsed, lxd_cpu }
}

/// Runs `apply` with a watch of `namespace` open, and returns once `n` LxdContainers report
/// `Ready=True`, with what the watch saw of each.
fn watch_until_ready(
    operator: &Operator,
    namespace: &str,
    n: usize,
    apply: impl FnOnce() + Send,
) -> HashMap<String, Seen> {
    use futures::TryStreamExt;
    use kube::runtime::watcher;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (watching, apply_now) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        // kubectl runs beside the watch, which keeps reading while it applies.
        scope.spawn(move || {
            if apply_now.recv().is_ok() {
                apply();
            }
        });
        runtime.block_on(async {
            let api: kube::Api<LxdContainer> =
                kube::Api::namespaced(operator.kube_client().await, namespace);
            let mut changes = std::pin::pin!(watcher(api, watcher::Config::default()));
            // The watch is open once its initial (empty) list is through.
            while !matches!(
                changes.try_next().await.unwrap(),
                Some(watcher::Event::InitDone)
            ) {}
            let started = Instant::now();
            watching.send(()).unwrap();
            let mut seen: HashMap<String, Seen> = HashMap::new();
            let mut ready = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
            while ready < n {
                let event = tokio::time::timeout_at(deadline, changes.try_next())
                    .await
                    .expect("every container Ready within 15 minutes")
                    .unwrap()
                    .expect("the watch goes on");
                let watcher::Event::Apply(container) = event else {
                    continue;
                };
                let at = started.elapsed();
                let name = container.metadata.name.clone().unwrap_or_default();
                let entry = seen.entry(name).or_default();
                entry.writes += 1;
                let status = container.status.as_ref();
                if entry.placed.is_none() && status.is_some_and(|s| s.member.is_some()) {
                    entry.placed = Some(at);
                }
                let is_ready = status.is_some_and(|status| {
                    status
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if is_ready && entry.ready.is_none() {
                    entry.ready = Some(at);
                    ready += 1;
                }
            }
            // The first event of each is its creation, not a write.
            for entry in seen.values_mut() {
                entry.writes = entry.writes.saturating_sub(1);
            }
            seen
        })
    })
}

/// The operator's metrics as numbers, by sample name with labels.
#[derive(Default)]
struct Samples(BTreeMap<String, f64>);

fn scrape(operator: &Operator) -> Samples {
    let url = format!("{}/metrics", operator.metrics_url.as_ref().unwrap());
    let (code, body) = http_get(&url);
    assert_eq!(code, 200, "metrics: {body}");
    Samples(
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
            .collect(),
    )
}

impl Samples {
    /// What was counted between `before` and these.
    fn since(&self, before: &Samples) -> Samples {
        Samples(
            self.0
                .iter()
                .map(|(name, value)| (name.clone(), value - before.0.get(name).unwrap_or(&0.0)))
                .collect(),
        )
    }

    /// The sum of every sample of `metric` whose labels hold all of `labels` (`key="value"`).
    fn sum(&self, metric: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(name, _)| {
                name.split_once('{').map_or(name.as_str(), |(m, _)| m) == metric
                    && labels.iter().all(|label| name.contains(label))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Count and mean of a histogram's observations with these labels.
    fn histogram(&self, metric: &str, labels: &[&str]) -> (f64, f64) {
        let count = self.sum(&format!("{metric}_count"), labels);
        let sum = self.sum(&format!("{metric}_sum"), labels);
        (count, if count > 0.0 { sum / count } else { 0.0 })
    }
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return 0.0;
    }
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index]
}

fn print_breakdown(
    n: usize,
    seen: &HashMap<String, Seen>,
    metrics: &Samples,
    operator_cpu: f64,
    lxd_cpu: f64,
) {
    let per = |count: f64| count / n as f64;
    println!("  where the time went ({n} containers, through the operator):");
    let mut stages = String::new();
    for stage in ["placed", "created", "started", "ready"] {
        let (count, mean) = metrics.histogram(
            "lxd_operator_container_stage_seconds",
            &[&format!("stage=\"{stage}\"")],
        );
        stages.push_str(&format!(" {stage} {mean:.2} s ({count})"));
    }
    println!("    stages, mean from the first reconcile (count):{stages}");
    let mut placed: Vec<f64> = seen
        .values()
        .filter_map(|s| s.placed)
        .map(|d| d.as_secs_f64())
        .collect();
    let mut ready: Vec<f64> = seen
        .values()
        .filter_map(|s| s.ready)
        .map(|d| d.as_secs_f64())
        .collect();
    println!(
        "    seen in the API from the apply: placed p50 {:.2} s, max {:.2} s; Ready p10 {:.2} s, p50 {:.2} s, p90 {:.2} s, max {:.2} s",
        quantile(&mut placed, 0.5),
        quantile(&mut placed, 1.0),
        quantile(&mut ready, 0.1),
        quantile(&mut ready, 0.5),
        quantile(&mut ready, 0.9),
        quantile(&mut ready, 1.0),
    );
    let mut waits = String::new();
    for wait in [
        "figures",
        "containers",
        "gathering",
        "larger_first",
        "decision_lock",
    ] {
        let (_, mean) = metrics.histogram(
            "lxd_operator_placement_wait_seconds",
            &[&format!("wait=\"{wait}\"")],
        );
        waits.push_str(&format!(" {wait} {:.1} ms", mean * 1000.0));
    }
    let (placements, placement_mean) =
        metrics.histogram("lxd_operator_placement_duration_seconds", &[]);
    println!(
        "    placement: {placements} decisions, mean {:.1} ms; waits, mean:{waits}",
        placement_mean * 1000.0
    );
    let (turns, turn_mean) = metrics.histogram("lxd_operator_lxd_create_turn_wait_seconds", &[]);
    println!(
        "    creates waiting for their turn on a member: {turns} creates, mean {turn_mean:.2} s"
    );
    let mut calls = String::new();
    for call in [
        "create",
        "state",
        "wait",
        "instance",
        "instances",
        "members",
        "resources",
        "metrics",
        "operation",
        "update",
        "other",
    ] {
        let label = format!("call=\"{call}\"");
        let (count, mean) =
            metrics.histogram("lxd_operator_lxd_request_duration_seconds", &[&label]);
        if count > 0.0 {
            calls.push_str(&format!(" {call} {:.2} ({mean:.2} s)", per(count)));
        }
    }
    println!("    LXD calls per container (mean latency):{calls}");
    let mut endpoints: BTreeMap<String, f64> = BTreeMap::new();
    for (name, value) in &metrics.0 {
        if let Some(labels) = name.strip_prefix("lxd_operator_lxd_requests_total{")
            && let Some(endpoint) = labels
                .split(',')
                .find_map(|l| l.strip_prefix("endpoint=\""))
        {
            *endpoints
                .entry(endpoint.trim_end_matches('"').to_owned())
                .or_default() += value;
        }
    }
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(endpoint, count)| format!("{endpoint} {count}"))
        .collect();
    println!("    LXD calls by endpoint: {}", endpoints.join(", "));
    let writes: usize = seen.values().map(|s| s.writes).sum();
    let reconciles = metrics.sum("lxd_operator_reconciles_total", &["kind=\"LxdContainer\""]);
    println!(
        "    API writes to each container (finalizer, status): {:.2}; reconciles per container: {:.2}",
        per(writes as f64),
        per(reconciles)
    );
    println!(
        "    CPU: operator {operator_cpu:.2} s, LXD daemons {lxd_cpu:.2} s ({:.3} s per container)",
        lxd_cpu / n as f64
    );
}

fn sequential_lxc(cluster: &TestCluster, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| unique_name(&format!("seq{i}"))).collect();
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
    names
}

/// N concurrent creates and starts. `routed`: each member's instances sent to that member's own
/// endpoint (else all to the first, which forwards them); `per_member`: at most that many
/// creates in flight on a member (0: no limit).
fn concurrent_rest(
    cluster: &TestCluster,
    n: usize,
    routed: bool,
    per_member: usize,
) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let members = cluster.members.len();
    let first = cluster.client_all();
    let clients: Vec<_> = (0..members)
        .map(|i| {
            if routed {
                cluster.client(&[i])
            } else {
                first.clone()
            }
        })
        .collect();
    let limits: Vec<_> = (0..members)
        .map(|_| {
            std::sync::Arc::new(tokio::sync::Semaphore::new(if per_member == 0 {
                tokio::sync::Semaphore::MAX_PERMITS
            } else {
                per_member
            }))
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| unique_name(&format!("rest{i}"))).collect();
    runtime.block_on(async {
        let tasks: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let client = clients[i % members].clone();
                let limit = limits[i % members].clone();
                let member = cluster.members[i % members].clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let turn = limit.acquire_owned().await.unwrap();
                    create(&client, &name, &member).await;
                    drop(turn);
                    start(&client, &name).await;
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    names
}

/// Creates `name` on `member` as a careful client does: a finished operation vanishes after a
/// few seconds, so one waited for late is settled from the instance; a create LXD gives up on
/// (under load LXD 5.0 answers "Failed to begin transaction: context deadline exceeded") is
/// cleaned up and sent again.
async fn create(client: &LxdClient, name: &str, member: &str) {
    // These instances carry no owner uid: one that exists after a lost create is settled as
    // "belongs to nobody", which here means made.
    let intent = Intent::Create { name, uid: "" };
    for attempt in 1.. {
        let sent = client
            .create_instance(&busybox(name), &Target::Member(member.to_owned()))
            .await;
        let settled = match sent {
            Ok(handle) => {
                client
                    .wait_or_settle(&handle, &intent, Duration::from_secs(600))
                    .await
            }
            Err(error) => Err(error),
        };
        match settled {
            Ok(Settlement::Done(_)) | Err(LxdError::AlreadyExists { .. }) => return,
            other if attempt < 10 => {
                eprintln!("create {name} (attempt {attempt}): {other:?}; again");
                if let Ok(handle) = client.delete_instance(name).await {
                    let _ = client.wait(&handle, Duration::from_secs(120)).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => panic!("create {name}: {other:?}"),
        }
    }
}

/// Starts `name`, settling a lost operation from the instance.
async fn start(client: &LxdClient, name: &str) {
    let intent = Intent::ChangeState {
        name,
        action: StateAction::Start,
    };
    for attempt in 1.. {
        let handle = client
            .change_state(name, StateAction::Start, None, false)
            .await
            .unwrap();
        match client
            .wait_or_settle(&handle, &intent, Duration::from_secs(600))
            .await
        {
            Ok(Settlement::Done(_)) => return,
            other if attempt < 10 => {
                eprintln!("start {name} (attempt {attempt}): {other:?}; again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => panic!("start {name}: {other:?}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize, default: usize| {
        args.get(index)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let n = number(1, 60);
    let cluster = TestCluster::get();
    let outcome = match args.first().map(String::as_str) {
        Some("direct") => measured(cluster, || concurrent_rest(cluster, n, false, 0)),
        Some("paced") => measured(cluster, || concurrent_rest(cluster, n, true, number(2, 0))),
        Some("sequential") => measured(cluster, || sequential_lxc(cluster, n)),
        Some("operator") => through_operator(cluster, n, Through::Containers),
        Some("set") => through_operator(cluster, n, Through::Set),
        _ => panic!("usage: bench-rollout <operator|set|direct|paced|sequential> N [K]"),
    };
    println!(
        "result {:.2} {:.2}",
        outcome.elapsed.as_secs_f64(),
        outcome.lxd_cpu
    );
}
