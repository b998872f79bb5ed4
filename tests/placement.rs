//! Placement on the real cluster: load placed out of band is avoided by `least-loaded` and
//! filled first by `bin-pack`; a pin holds; an impossible request is Unschedulable with counted
//! reasons; a webhook steers placement, and its failure policy holds when it is down; a slow
//! webhook stalls no other placement, redirects are not followed and a password in its URL
//! shows nowhere; sixty mixed containers applied at once end evenly spread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::container::{DesiredState, Placement, PlacementStrategy};
use lxd_operator_crds::testing::LxdContainerBuilder;
use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{TestCluster, condition, http_get, unique_name};
use serde_json::Value;

/// A Stopped container of `namespace` that asks for `memory`: placement needs no more.
fn container(namespace: &str, name: &str, memory: &str) -> LxdContainerBuilder {
    LxdContainer::builder(name)
        .namespace(namespace)
        .state(DesiredState::Stopped)
        .memory(memory)
}

fn members_when_scheduled(
    operator: &Operator,
    namespace: &str,
    count: usize,
) -> BTreeMap<String, String> {
    wait_for(Duration::from_secs(60), "every container placed", || {
        let statuses = operator.statuses(namespace);
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

/// Six containers of `memory` each, named `{prefix}1` to `{prefix}6`, applied at once to an
/// operator and namespace of their own and placed by `strategy`; with the member each got.
fn six_placed_by(
    strategy: PlacementStrategy,
    prefix: &str,
    memory: &str,
) -> (Operator, String, BTreeMap<String, String>) {
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("place");
    let containers: Vec<LxdContainer> = (1..=6)
        .map(|i| {
            container(&namespace, &format!("{prefix}{i}"), memory)
                .strategy(strategy)
                .build()
        })
        .collect();
    operator.apply_containers(&containers);
    let placed = members_when_scheduled(&operator, &namespace, 6);
    (operator, namespace, placed)
}

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

    let (operator, namespace, placed) =
        six_placed_by(PlacementStrategy::LeastLoaded, "ll", "512Mi");
    println!("least-loaded: {placed:?}");
    assert!(
        placed.values().all(|m| m != "node3"),
        "least-loaded used the full member: {placed:?}"
    );

    let (packer, packed_namespace, placed) = six_placed_by(PlacementStrategy::BinPack, "bp", "1Gi");
    println!("bin-pack: {placed:?}");
    assert_eq!(
        placed.values().filter(|m| *m == "node3").count(),
        3,
        "bin-pack fills node3 as far as it fits: {placed:?}"
    );

    operator.delete_containers(&namespace, Duration::from_secs(120));
    packer.delete_containers(&packed_namespace, Duration::from_secs(120));
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

    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("place");
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
    let small: Vec<LxdContainer> = (1..=6)
        .map(|i| {
            container(&namespace, &format!("small{i}"), "512Mi")
                .cpu(0.5)
                .build()
        })
        .collect();
    operator.apply_containers(&small);
    let placed = members_when_scheduled(&operator, &namespace, 6);
    println!("the cluster's default policy: {placed:?}");
    assert!(
        placed.values().all(|m| m != "node1"),
        "placed on the member out-of-band instances fill: {placed:?}"
    );
    for (name, status) in operator.statuses(&namespace) {
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
    // ... and says it follows the cluster's events, through which member.
    let status: Value =
        serde_json::from_str(&operator.kubectl_ok(&["get", "lxdcl", "local", "-o", "json"]))
            .unwrap();
    let stream = condition(&status["status"], "EventStream").unwrap();
    assert_eq!(
        (&stream["status"], &stream["reason"]),
        (&Value::from("True"), &Value::from("Connected")),
        "{stream}"
    );
    assert!(
        cluster
            .endpoints
            .iter()
            .any(|e| stream["message"].as_str().unwrap().contains(e.as_str())),
        "{stream}"
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

    operator.delete_containers(&namespace, Duration::from_secs(120));
    for name in &fillers {
        cluster.lxc(&["delete", "--force", name]);
    }
}

/// (max - min) / mean of the memory the containers ask for, summed per member.
fn memory_spread(placed: &BTreeMap<String, String>, memory_of: &BTreeMap<String, u64>) -> f64 {
    let mut per_member: BTreeMap<&str, f64> = TestCluster::get()
        .members
        .iter()
        .map(|m| (m.as_str(), 0.0))
        .collect();
    for (name, member) in placed {
        *per_member.entry(member).or_default() += memory_of[name] as f64;
    }
    let values: Vec<f64> = per_member.into_values().collect();
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / (values.iter().sum::<f64>() / values.len() as f64)
}

#[test]
fn sixty_mixed_containers_applied_at_once_are_spread_evenly_over_the_members() {
    // Held: an out-of-band filler of another test would be balanced against, as it should be.
    let _filling = FILLING_A_MEMBER.lock();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("mixed");
    // The sizes of the placement engine's simulation, in the same order.
    let sizes_mib = [128, 256, 512, 1024, 384, 768];
    let memory_of: BTreeMap<String, u64> = (0..60)
        .map(|i| (format!("m{i:02}"), sizes_mib[(i * 7 + i / 3) % 6] << 20))
        .collect();
    let containers: Vec<LxdContainer> = memory_of
        .iter()
        .map(|(name, bytes)| container(&namespace, name, &format!("{}Mi", bytes >> 20)).build())
        .collect();
    operator.apply_containers(&containers);
    let placed = members_when_scheduled(&operator, &namespace, 60);
    let spread = memory_spread(&placed, &memory_of);
    println!("60 mixed containers at once: memory spread (max-min)/mean {spread:.3}");
    assert!(spread <= 0.10, "memory spread {spread:.3}: {placed:?}");
    operator.delete_containers(&namespace, Duration::from_secs(300));
}

#[test]
fn a_pin_holds_and_an_impossible_request_is_unschedulable_with_counted_reasons() {
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("place");
    operator.apply_containers(&[container(&namespace, "pinned", "64Mi")
        .target("node2")
        .build()]);
    operator.apply_containers(&[container(&namespace, "huge", "100Ti")
        .placement(Placement::default())
        .build()]);
    let pinned = members_when_scheduled(&operator, &namespace, 1);
    assert_eq!(pinned["pinned"], "node2");
    let huge = wait_for(Duration::from_secs(30), "huge Unschedulable", || {
        let status = operator.statuses(&namespace)["huge"].clone();
        (status["phase"] == "Unschedulable").then_some(status)
    });
    let scheduled = condition(&huge, "Scheduled").unwrap();
    assert_eq!(
        scheduled["message"], "0/3 members: 3 insufficient memory",
        "{scheduled}"
    );
    operator.delete_containers(&namespace, Duration::from_secs(60));
}

/// A webhook that scores one member 100 and the others 0, for `requests` requests.
fn webhook(favourite: &'static str) -> (String, std::thread::JoinHandle<usize>) {
    let answer = format!(r#"{{"scores": {{"{favourite}": 100}}}}"#);
    fake_webhook(2, Duration::ZERO, move |_| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
    })
}

/// A webhook on loopback that serves `count` requests, each answered after `delay` with what
/// `answer` makes of the request head; the thread returns how many it served.
fn fake_webhook(
    count: usize,
    delay: Duration,
    answer: impl Fn(&str) -> String + Send + 'static,
) -> (String, std::thread::JoinHandle<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(false).unwrap();
    let url = format!("http://{}/score", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut served = 0;
        for stream in listener.incoming().take(count) {
            let mut stream = stream.unwrap();
            let mut buffer = vec![0u8; 65536];
            let mut request = Vec::new();
            // Read headers and the body (Content-Length).
            let head = loop {
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
                        break head.to_owned();
                    }
                }
                if n == 0 {
                    break text;
                }
            };
            std::thread::sleep(delay);
            let _ = stream.write_all(answer(&head).as_bytes());
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
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("place");
    let (url, server) = webhook("node3");
    operator.apply(&policy("steered", &url, "Fail"));
    let apply_with_policy = |name: &str, policy: &str| {
        operator.apply_containers(&[container(&namespace, name, "64Mi").policy(policy).build()])
    };
    apply_with_policy("w1", "steered");
    apply_with_policy("w2", "steered");
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
    apply_with_policy("strict-1", "strict");
    apply_with_policy("lenient-1", "lenient");
    let strict = wait_for(
        Duration::from_secs(30),
        "strict-1 waiting for the webhook",
        || {
            let status = operator.statuses(&namespace)["strict-1"].clone();
            condition(&status, "Scheduled")
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
            operator.statuses(&namespace)["lenient-1"]["member"]
                .as_str()
                .map(|_| ())
        },
    );
    operator.delete_containers(&namespace, Duration::from_secs(60));
}

fn slow_policy(name: &str, url: &str) -> String {
    format!(
        "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdPlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n  webhook: {{url: \"{url}\", timeoutMillis: 15000, failurePolicy: Fail, weight: 100}}\n"
    )
}

/// The Scheduled condition's message once it has `reason`.
fn scheduled_message(operator: &Operator, namespace: &str, name: &str, reason: &str) -> String {
    wait_for(
        Duration::from_secs(30),
        &format!("{name}: {reason}"),
        || {
            let status = operator.statuses(namespace).get(name)?.clone();
            condition(&status, "Scheduled")
                .filter(|c| c["reason"] == reason)
                .map(|c| c["message"].as_str().unwrap_or("").to_owned())
        },
    )
}

#[test]
fn a_slow_webhook_stalls_no_other_placement_redirects_are_not_followed_and_passwords_never_show() {
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("hooks");
    let cluster = TestCluster::get();
    let favourite = cluster.members[1].clone();
    let answer = format!(r#"{{"scores": {{"{favourite}": 100}}}}"#);
    let (url, slow) = fake_webhook(1, Duration::from_secs(5), move |_| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
    });
    operator.apply(&slow_policy("slow", &url));
    operator.apply_containers(&[container(&namespace, "patient", "64Mi")
        .policy("slow")
        .build()]);
    std::thread::sleep(Duration::from_millis(500));
    operator.apply_containers(&[container(&namespace, "quick", "64Mi").build()]);
    let placed_first = wait_for(Duration::from_secs(30), "a container placed", || {
        let statuses = operator.statuses(&namespace);
        statuses
            .iter()
            .find_map(|(name, status)| status["member"].as_str().map(|_| name.clone()))
    });
    assert_eq!(
        placed_first, "quick",
        "the default policy's container waited for another policy's webhook"
    );
    let placed = members_when_scheduled(&operator, &namespace, 2);
    assert_eq!(placed["patient"], favourite, "{placed:?}");
    assert_eq!(slow.join().unwrap(), 1);

    // A webhook that answers with a redirect: the decision is not sent on.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}/score", elsewhere.local_addr().unwrap());
    let (url, moved) = fake_webhook(1, Duration::ZERO, move |_| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    });
    operator.apply(&slow_policy("moved", &url));
    operator.apply_containers(&[container(&namespace, "redirected", "64Mi")
        .policy("moved")
        .build()]);
    let message = scheduled_message(&operator, &namespace, "redirected", "WebhookFailed");
    assert!(message.contains("307"), "{message}");
    assert_eq!(moved.join().unwrap(), 1);
    elsewhere.set_nonblocking(true).unwrap();
    assert!(elsewhere.accept().is_err(), "the redirect was followed");

    // A password in the URL is sent, and shown nowhere.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let secret_url = format!("http://bot:hunter2@127.0.0.1:{port}/score");
    operator.apply(&slow_policy("secret", &secret_url));
    operator.apply_containers(&[container(&namespace, "guarded", "64Mi")
        .policy("secret")
        .build()]);
    let message = scheduled_message(&operator, &namespace, "guarded", "WebhookFailed");
    assert!(
        message.contains(&format!("http://redacted@127.0.0.1:{port}/score")),
        "{message}"
    );
    let everything = format!(
        "{}{}",
        operator.kubectl_ok(&["get", "lxdc,events", "-n", &namespace, "-o", "yaml"]),
        operator.log()
    );
    assert!(!everything.contains("hunter2"), "the password shows");

    // Plain HTTP to another host is refused before any request.
    operator.apply(&slow_policy("far", "http://192.0.2.10/score"));
    let ready = wait_for(Duration::from_secs(20), "the far policy's Ready", || {
        let policy: Value =
            serde_json::from_str(&operator.kubectl_ok(&["get", "lxdpp", "far", "-o", "json"]))
                .unwrap();
        condition(&policy["status"], "Ready")
    });
    assert_eq!(ready["status"], "False");
    assert_eq!(
        ready["message"],
        "spec.webhook.url: http://192.0.2.10/score: http:// is allowed only to the operator's own host (127.0.0.0/8, ::1, localhost); use https://"
    );
    operator.delete_containers(&namespace, Duration::from_secs(60));
}

#[test]
fn a_policy_naming_an_unknown_plugin_is_not_ready_and_says_which() {
    let operator = Operator::standalone_with_cluster();
    operator.apply("apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdPlacementPolicy\nmetadata: {name: typo}\nspec:\n  scorers: [{name: least-alocated, weight: 2}]\n");
    let ready = wait_for(
        Duration::from_secs(20),
        "the policy's Ready condition",
        || {
            let policy: Value =
                serde_json::from_str(&operator.kubectl_ok(&["get", "lxdpp", "typo", "-o", "json"]))
                    .unwrap();
            condition(&policy["status"], "Ready")
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

#[test]
fn a_cordoned_member_takes_no_new_containers_until_it_is_uncordoned() {
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("cordon");
    let cordon = |members: &str| {
        operator.patch_cluster(&format!(r#"{{"cordonedMembers":{members}}}"#));
    };
    cordon(r#"["node2"]"#);
    let spread: Vec<LxdContainer> = (1..=6)
        .map(|i| {
            container(&namespace, &format!("s{i}"), "64Mi")
                .strategy(PlacementStrategy::Spread)
                .build()
        })
        .collect();
    operator.apply_containers(&spread);
    let placed = members_when_scheduled(&operator, &namespace, 6);
    let used: BTreeSet<&str> = placed.values().map(String::as_str).collect();
    assert_eq!(used, BTreeSet::from(["node1", "node3"]), "{placed:?}");

    // Pinned to it: unschedulable while it is cordoned, and placement says why.
    operator.apply_containers(&[container(&namespace, "pinned", "64Mi")
        .target("node2")
        .build()]);
    let pinned = wait_for(Duration::from_secs(30), "pinned Unschedulable", || {
        let status = operator.statuses(&namespace)["pinned"].clone();
        (status["phase"] == "Unschedulable").then_some(status)
    });
    let scheduled = condition(&pinned, "Scheduled").unwrap();
    assert!(
        scheduled["message"]
            .as_str()
            .unwrap()
            .contains("1 cordoned"),
        "{scheduled}"
    );

    cordon("[]");
    let placed = members_when_scheduled(&operator, &namespace, 7);
    assert_eq!(placed["pinned"], "node2");
    operator.delete_containers(&namespace, Duration::from_secs(60));
}
