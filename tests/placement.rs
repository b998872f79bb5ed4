//! Placement on the real cluster: load placed out of band is avoided by `least-loaded` and
//! filled first by `bin-pack`; a pin holds; an impossible request is Unschedulable with counted
//! reasons; a webhook steers placement, and its failure policy holds when it is down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use lxd_operator_tests::{TestCluster, cluster_manifest, http_get, unique_name};
use serde_json::Value;

fn start() -> (Operator, String) {
    let operator = Operator::start(Mode::Standalone);
    operator.apply(&cluster_manifest());
    let namespace = unique_name("place");
    operator.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
    ));
    (operator, namespace)
}

fn container(namespace: &str, name: &str, memory: &str, placement: &str) -> String {
    format!(
        "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainer\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  clusterRef: {{name: local}}\n  image: {{alias: busybox}}\n  state: Stopped\n  resources: {{memory: {memory}}}\n  placement: {placement}\n"
    )
}

fn statuses(operator: &Operator, namespace: &str) -> BTreeMap<String, Value> {
    let list: Value =
        serde_json::from_str(&operator.kubectl_ok(&["get", "lxdc", "-n", namespace, "-o", "json"]))
            .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap().to_owned(),
                i["status"].clone(),
            )
        })
        .collect()
}

fn members_when_scheduled(
    operator: &Operator,
    namespace: &str,
    count: usize,
) -> BTreeMap<String, String> {
    wait_for(Duration::from_secs(60), "every container placed", || {
        let statuses = statuses(operator, namespace);
        let placed: BTreeMap<String, String> = statuses
            .iter()
            .filter_map(|(n, s)| s["member"].as_str().map(|m| (n.clone(), m.to_owned())))
            .collect();
        (placed.len() == count).then_some(placed)
    })
}

/// Held by tests that fill a member out of band, so that one test's fillers do not steer
/// another's placement.
static FILLING_A_MEMBER: Mutex<()> = Mutex::new(());

/// Memory of one member as LXD reports it (members of the test cluster share one host).
fn member_memory(cluster: &TestCluster) -> u64 {
    let resources: Value =
        serde_json::from_str(&cluster.lxc(&["query", "/1.0/resources?target=node3"])).unwrap();
    resources["memory"]["total"].as_u64().unwrap()
}

#[test]
fn load_placed_out_of_band_is_avoided_by_least_loaded_and_filled_first_by_bin_pack() {
    let _filling = FILLING_A_MEMBER.lock();
    let cluster = TestCluster::get();
    let gib = 1u64 << 30;
    // Leave 3.5 GiB of node3's memory unallocated, with instances the operator does not own.
    let fill = (member_memory(cluster) - 3 * gib - gib / 2) / 3;
    let fillers: Vec<String> = (0..3).map(|i| unique_name(&format!("filler{i}"))).collect();
    for name in &fillers {
        cluster.lxc(&[
            "init",
            "busybox",
            name,
            "--target",
            "node3",
            "--quiet",
            "-c",
            &format!("limits.memory={fill}"),
        ]);
    }

    let (operator, namespace) = start();
    let spread_out: Vec<String> = (1..=6)
        .map(|i| {
            container(
                &namespace,
                &format!("ll{i}"),
                "512Mi",
                "{strategy: least-loaded}",
            )
        })
        .collect();
    operator.apply(&spread_out.join("---\n"));
    let placed = members_when_scheduled(&operator, &namespace, 6);
    println!("least-loaded: {placed:?}");
    assert!(
        placed.values().all(|m| m != "node3"),
        "least-loaded used the full member: {placed:?}"
    );

    let (packer, packed_namespace) = start();
    let packed: Vec<String> = (1..=6)
        .map(|i| {
            container(
                &packed_namespace,
                &format!("bp{i}"),
                "1Gi",
                "{strategy: bin-pack}",
            )
        })
        .collect();
    packer.apply(&packed.join("---\n"));
    let placed = members_when_scheduled(&packer, &packed_namespace, 6);
    println!("bin-pack: {placed:?}");
    assert_eq!(
        placed.values().filter(|m| *m == "node3").count(),
        3,
        "bin-pack fills node3 as far as it fits: {placed:?}"
    );

    operator.kubectl_ok(&[
        "delete",
        "lxdc",
        "--all",
        "-n",
        &namespace,
        "--timeout=120s",
    ]);
    packer.kubectl_ok(&[
        "delete",
        "lxdc",
        "--all",
        "-n",
        &packed_namespace,
        "--timeout=120s",
    ]);
    for name in &fillers {
        cluster.lxc(&["delete", "--force", name]);
    }
}

#[test]
fn limits_in_lxds_own_units_are_counted_and_the_cluster_s_default_policy_places_and_is_named() {
    let _filling = FILLING_A_MEMBER.lock();
    let cluster = TestCluster::get();
    let (mib, gib) = (1u64 << 20, 1u64 << 30);
    // Out of band, as `lxc launch ... -c limits.memory=...` users write it: a quarter of the
    // host, then MiB and GB, together leaving about 3.5 GiB of node1's memory unallocated.
    let total = member_memory(cluster);
    let rest = (total - total / 4 - 3 * gib - gib / 2) / 2;
    let (in_mib, in_gb) = (rest / mib, rest / 1_000_000_000);
    let limits = [
        "25%".to_owned(),
        format!("{in_mib}MiB"),
        format!("{in_gb}GB"),
    ];
    let filled = total / 4 + in_mib * mib + in_gb * 1_000_000_000;
    let fillers: Vec<String> = (0..3).map(|i| unique_name(&format!("units{i}"))).collect();
    for (name, limit) in fillers.iter().zip(&limits) {
        let memory = format!("limits.memory={limit}");
        cluster.lxc(&[
            "init", "busybox", name, "--target", "node1", "--quiet", "-c", &memory,
        ]);
    }

    let (operator, namespace) = start();
    let policy = unique_name("balanced");
    operator.apply(&format!(
        "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdPlacementPolicy\nmetadata: {{name: {policy}}}\nspec:\n  filters: [{{name: capacity}}]\n  scorers: [{{name: least-allocated, weight: 1}}]\n"
    ));
    operator.kubectl_ok(&[
        "patch",
        "lxdcl",
        "local",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"defaultPlacementPolicy":"{policy}"}}}}"#),
    ]);
    // Half a core each: counted as unlimited (a small default each), the fillers would leave
    // node1 looking the emptiest after a few of these.
    let small: Vec<String> = (1..=6)
        .map(|i| {
            container(&namespace, &format!("small{i}"), "512Mi", "{}").replace(
                "resources: {memory: 512Mi}",
                "resources: {cpu: 0.5, memory: 512Mi}",
            )
        })
        .collect();
    operator.apply(&small.join("---\n"));
    let placed = members_when_scheduled(&operator, &namespace, 6);
    println!("the cluster's default policy: {placed:?}");
    assert!(
        placed.values().all(|m| m != "node1"),
        "placed on the member out-of-band instances fill: {placed:?}"
    );
    for (name, status) in statuses(&operator, &namespace) {
        assert_eq!(status["placement"]["policy"], policy.as_str(), "{name}");
    }

    // The cluster's status counts what placement counted.
    let node1: Value = serde_json::from_str(&operator.kubectl_ok(&[
        "get",
        "lxdcl",
        "local",
        "-o",
        "jsonpath={.status.members[?(@.name=='node1')]}",
    ]))
    .unwrap();
    let allocated = node1["allocated"]["memoryBytes"].as_u64().unwrap();
    assert!(
        allocated >= filled,
        "node1's status shows {allocated} bytes allocated: {node1}"
    );

    // Placement metrics are labelled with the policy that placed.
    let (_, metrics) = http_get(&format!(
        "{}/metrics",
        operator.metrics_url.clone().unwrap()
    ));
    let label = format!(
        r#"lxd_operator_placement_decisions_total{{strategy="{policy}",outcome="placed"}} 6"#
    );
    assert!(
        metrics.lines().any(|l| l == label),
        "no {label} in\n{metrics}"
    );

    operator.kubectl_ok(&[
        "delete",
        "lxdc",
        "--all",
        "-n",
        &namespace,
        "--timeout=120s",
    ]);
    for name in &fillers {
        cluster.lxc(&["delete", "--force", name]);
    }
}

#[test]
fn a_pin_holds_and_an_impossible_request_is_unschedulable_with_counted_reasons() {
    let (operator, namespace) = start();
    operator.apply(&container(&namespace, "pinned", "64Mi", "{target: node2}"));
    operator.apply(&container(&namespace, "huge", "100Ti", "{}"));
    let pinned = members_when_scheduled(&operator, &namespace, 1);
    assert_eq!(pinned["pinned"], "node2");
    let huge = wait_for(Duration::from_secs(30), "huge Unschedulable", || {
        let status = statuses(&operator, &namespace)["huge"].clone();
        (status["phase"] == "Unschedulable").then_some(status)
    });
    let scheduled = huge["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Scheduled")
        .unwrap()
        .clone();
    assert_eq!(
        scheduled["message"], "0/3 members: 3 insufficient memory",
        "{scheduled}"
    );
    operator.kubectl_ok(&["delete", "lxdc", "--all", "-n", &namespace, "--timeout=60s"]);
}

/// A webhook that scores one member 100 and the others 0, for `requests` requests.
fn webhook(favourite: &'static str) -> (String, std::thread::JoinHandle<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(false).unwrap();
    let url = format!("http://{}/score", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut served = 0;
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut buffer = vec![0u8; 65536];
            let mut request = Vec::new();
            // Read headers and the body (Content-Length).
            loop {
                let n = stream.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            let answer = format!(r#"{{"scores": {{"{favourite}": 100}}}}"#);
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len()).unwrap();
            served += 1;
        }
        served
    });
    (url, server)
}

fn policy(name: &str, url: &str, failure: &str) -> String {
    format!(
        "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdPlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n  filters: [{{name: capacity}}]\n  scorers: [{{name: least-allocated, weight: 1}}]\n  webhook: {{url: \"{url}\", timeoutMillis: 1000, failurePolicy: {failure}, weight: 100}}\n"
    )
}

#[test]
fn a_webhook_steers_placement_and_its_failure_policy_holds_when_it_is_down() {
    let (operator, namespace) = start();
    let (url, server) = webhook("node3");
    operator.apply(&policy("steered", &url, "Fail"));
    operator.apply(&container(&namespace, "w1", "64Mi", "{policy: steered}"));
    operator.apply(&container(&namespace, "w2", "64Mi", "{policy: steered}"));
    let placed = members_when_scheduled(&operator, &namespace, 2);
    assert_eq!(
        placed.values().collect::<Vec<_>>(),
        ["node3", "node3"],
        "{placed:?}"
    );
    assert_eq!(server.join().unwrap(), 2);

    // The webhook is gone now: Fail keeps the container Pending with the reason; Ignore decides
    // without it.
    operator.apply(&policy("strict", &url, "Fail"));
    operator.apply(&policy("lenient", &url, "Ignore"));
    operator.apply(&container(
        &namespace,
        "strict-1",
        "64Mi",
        "{policy: strict}",
    ));
    operator.apply(&container(
        &namespace,
        "lenient-1",
        "64Mi",
        "{policy: lenient}",
    ));
    let strict = wait_for(
        Duration::from_secs(30),
        "strict-1 waiting for the webhook",
        || {
            let status = statuses(&operator, &namespace)["strict-1"].clone();
            let scheduled = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Scheduled").cloned());
            scheduled
                .filter(|c| c["reason"] == "WebhookFailed")
                .map(|_| status)
        },
    );
    assert_eq!(strict["phase"], "Pending");
    assert!(strict.get("member").is_none_or(Value::is_null));
    wait_for(
        Duration::from_secs(30),
        "lenient-1 placed without the webhook",
        || {
            statuses(&operator, &namespace)["lenient-1"]["member"]
                .as_str()
                .map(|_| ())
        },
    );
    operator.kubectl_ok(&["delete", "lxdc", "--all", "-n", &namespace, "--timeout=60s"]);
}

#[test]
fn a_policy_naming_an_unknown_plugin_is_not_ready_and_says_which() {
    let (operator, _) = start();
    operator.apply("apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdPlacementPolicy\nmetadata: {name: typo}\nspec:\n  scorers: [{name: least-alocated, weight: 2}]\n");
    let ready = wait_for(
        Duration::from_secs(20),
        "the policy's Ready condition",
        || {
            let policy: Value =
                serde_json::from_str(&operator.kubectl_ok(&["get", "lxdpp", "typo", "-o", "json"]))
                    .unwrap();
            policy["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        },
    );
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("spec.scorers[0].name")
            && message.contains("least-alocated")
            && message.contains("least-allocated"),
        "{message}"
    );
}
