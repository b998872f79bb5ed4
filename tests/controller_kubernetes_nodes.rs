//! LXD beside Kubernetes on the same hosts, on the real 3-member cluster in standalone mode:
//! Nodes named as the members and Pods bound to them are applied as kubelet and kube-scheduler
//! leave them (the embedded API server stores them; no kubelet runs). Placement avoids a member
//! whose Node's Pods request most of its memory, names the pods' share when nothing else fits,
//! and takes the member again once a Pod finishes; filling a member with LXD containers past
//! the threshold taints its Node, and deleting them removes the taint, kubelet's taints kept;
//! unmapping the members takes the operator's figures off the Nodes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use lxd_operator_crds::LxdContainer;
use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{TestCluster, http_get, managed_instances};
use serde_json::{Value, json};

const MEMBERS: [&str; 3] = ["node1", "node2", "node3"];
const TAINT: &str = "lxd-operator.dev/lxd-pressure";
/// A taint kubelet set, which the operator must leave as it is.
const KUBELETS_TAINT: &str = "node.kubernetes.io/disk-pressure";

fn cluster_status(operator: &Operator) -> Value {
    let cluster: Value =
        serde_json::from_str(&operator.kubectl_ok(&["get", "lxdcl", "local", "-o", "json"]))
            .unwrap();
    cluster["status"].clone()
}

/// Each member's (memory capacity in bytes, LXD's share in percent) once status shows them.
fn member_figures(operator: &Operator) -> Vec<(String, f64, f64)> {
    wait_for(
        Duration::from_secs(60),
        "members with capacity in status",
        || {
            let status = cluster_status(operator);
            let members = status["members"].as_array()?.clone();
            let figures: Vec<(String, f64, f64)> = members
                .iter()
                .filter_map(|m| {
                    let capacity = m["capacity"]["memoryBytes"].as_f64()?;
                    let cpus = m["capacity"]["cpus"].as_f64()?;
                    let memory = m["allocated"]["memoryBytes"].as_f64().unwrap_or(0.0);
                    let cpu = m["allocated"]["cpus"].as_f64().unwrap_or(0.0);
                    let share = (100.0 * memory / capacity).max(100.0 * cpu / cpus);
                    Some((m["name"].as_str()?.to_owned(), capacity, share))
                })
                .collect();
            (figures.len() == 3).then_some(figures)
        },
    )
}

fn node_manifest(name: &str, memory: f64) -> String {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": KUBELETS_TAINT, "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "2", "memory": format!("{}", memory as u64), "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
    .to_string()
}

fn pod_manifest(namespace: &str, name: &str, node: &str, memory: f64) -> String {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx",
            "resources": {"requests": {"cpu": "100m", "memory": format!("{}", memory as u64)}}}]}})
    .to_string()
}

fn set_pod_phase(operator: &Operator, namespace: &str, name: &str, phase: &str) {
    operator.patch_status(
        "pod",
        namespace,
        name,
        &json!({"status": {"phase": phase}}).to_string(),
    );
}

fn container(operator: &Operator, namespace: &str, name: &str) -> Value {
    serde_json::from_str(
        &operator.kubectl_ok(&["get", "lxdc", name, "-n", namespace, "-o", "json"]),
    )
    .unwrap()
}

fn node(operator: &Operator, name: &str) -> Value {
    serde_json::from_str(&operator.kubectl_ok(&["get", "node", name, "-o", "json"])).unwrap()
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str().map(str::to_owned))
        .collect()
}

fn gib(bytes: f64) -> String {
    format!("{}Mi", (bytes / 1024.0 / 1024.0).floor() as u64)
}

#[test]
fn lxd_and_kubernetes_see_what_the_other_placed_on_shared_hosts() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("kubeside");
    let figures = member_figures(&operator);
    let capacity = figures[0].1;
    // The member whose Node gets the Pods, and the one LXD fills: the least held of the others,
    // so that what other tests hold on the shared cluster leaves room above the threshold.
    let crowded = "node2";
    let (filled, _, baseline) = figures
        .iter()
        .filter(|(name, _, _)| name != crowded)
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .cloned()
        .unwrap();
    assert!(
        baseline < 50.0,
        "the shared cluster is too full for this test: {figures:?}"
    );
    let threshold = (baseline + 20.0).ceil();
    operator.patch_cluster(
        &json!({"memberSyncIntervalSeconds": 5,
            "kubernetesNodes": {"taintThresholdPercent": threshold as u32}})
        .to_string(),
    );
    for member in MEMBERS {
        operator.apply(&node_manifest(member, capacity));
    }
    // kube-scheduler bound Pods asking 90% of node2's memory; kubelet runs them.
    for (pod, share) in [("db", 0.6), ("cache", 0.3)] {
        operator.apply(&pod_manifest(&namespace, pod, crowded, capacity * share));
        set_pod_phase(&operator, &namespace, pod, "Running");
    }

    // least-loaded (the default) avoids node2 though LXD shows nothing of the Pods there.
    operator.apply_containers(&[LxdContainer::builder("small")
        .namespace(&namespace)
        .memory("64Mi")
        .build()]);
    let small = wait_for(Duration::from_secs(60), "small Running", || {
        let small = container(&operator, &namespace, "small");
        (small["status"]["phase"] == "Running").then_some(small)
    });
    assert_ne!(small["status"]["member"], crowded, "{}", small["status"]);
    let explanation = small["status"]["placement"].to_string();
    println!("small placed: {explanation}");
    assert!(explanation.contains("by pods"), "{}", small["status"]);

    // A container that only node2 may take (its target) does not fit beside the Pods.
    let wide = capacity * 0.2;
    operator.apply_containers(&[LxdContainer::builder("pinned")
        .namespace(&namespace)
        .memory(&gib(wide))
        .target(crowded)
        .build()]);
    let refused = wait_for(Duration::from_secs(30), "pinned Unschedulable", || {
        let pinned = container(&operator, &namespace, "pinned");
        (pinned["status"]["phase"] == "Unschedulable").then_some(pinned)
    });
    let message = refused["status"].to_string();
    println!("pinned refused: {message}");
    assert!(
        message.contains("insufficient memory") && message.contains("by pods"),
        "{message}"
    );

    // The job Pod finishes: its share is free, and the container is placed there.
    set_pod_phase(&operator, &namespace, "db", "Succeeded");
    let freed = Instant::now();
    wait_for(Duration::from_secs(60), "pinned Running on node2", || {
        let pinned = container(&operator, &namespace, "pinned");
        (pinned["status"]["phase"] == "Running" && pinned["status"]["member"] == crowded)
            .then_some(())
    });
    println!(
        "pinned Running {:?} after the Pod finished",
        freed.elapsed()
    );

    // LXD fills the other member past the threshold: its Node is tainted, kubelet's taint kept.
    let fill = capacity * (threshold - baseline + 10.0) / 100.0;
    operator.apply_containers(&[LxdContainer::builder("filler")
        .namespace(&namespace)
        .memory(&gib(fill))
        .target(&filled)
        .build()]);
    let created = Instant::now();
    let tainted = wait_for(
        Duration::from_secs(60),
        "the filled member's Node tainted",
        || {
            let node = node(&operator, &filled);
            taint_keys(&node)
                .contains(&TAINT.to_owned())
                .then_some(node)
        },
    );
    println!(
        "{filled} tainted {:?} after the filler was applied: {}",
        created.elapsed(),
        tainted["metadata"]["annotations"]
    );
    assert!(
        taint_keys(&tainted).contains(&KUBELETS_TAINT.to_owned()),
        "{tainted}"
    );
    let annotations = &tainted["metadata"]["annotations"];
    assert_eq!(
        annotations["lxd-operator.dev/lxd-member"],
        format!("local/{filled}")
    );
    let share: f64 = annotations["lxd-operator.dev/lxd-share-percent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(share > threshold, "{annotations}");
    let untouched = node(&operator, "node2");
    assert!(
        !taint_keys(&untouched).contains(&TAINT.to_owned()),
        "{untouched}"
    );

    operator.kubectl_ok(&[
        "delete",
        "lxdc",
        "filler",
        "-n",
        &namespace,
        "--timeout=60s",
    ]);
    let deleted = Instant::now();
    let eased = wait_for(Duration::from_secs(60), "the taint removed", || {
        let node = node(&operator, &filled);
        (!taint_keys(&node).contains(&TAINT.to_owned())).then_some(node)
    });
    println!(
        "{filled} untainted {:?} after the filler was deleted",
        deleted.elapsed()
    );
    assert_eq!(taint_keys(&eased), [KUBELETS_TAINT], "{eased}");

    let (_, metrics) = http_get(&format!(
        "{}/metrics",
        operator.metrics_url.as_deref().unwrap()
    ));
    let pods_line = metrics
        .lines()
        .find(|l| {
            l.starts_with("lxd_operator_member_allocated_memory_bytes")
                && l.contains("by=\"pods\"")
                && l.contains("member=\"node2\"")
        })
        .unwrap_or_else(|| panic!("no pods allocation of node2:\n{metrics}"));
    println!("{pods_line}");

    // Unmapped, the Nodes lose our figures (and would lose our taint), kubelet's taint kept.
    operator.patch_cluster(r#"{"kubernetesNodes": null}"#);
    wait_for(
        Duration::from_secs(30),
        "our annotations gone from every Node",
        || {
            MEMBERS
                .iter()
                .map(|member| node(&operator, member))
                .all(|node| {
                    node["metadata"]["annotations"]["lxd-operator.dev/lxd-member"].is_null()
                        && taint_keys(&node) == [KUBELETS_TAINT]
                })
                .then_some(())
        },
    );

    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}
