//! Forming a cluster declaratively: bare LXD servers (`hack/lxd-cluster.sh bare`, on
//! 127.0.0.4-8) listed in an LxdCluster become one cluster with the failure domains, groups and
//! labels asked, without `lxd init` on any of them; a server added later joins, one removed
//! leaves once our containers are off it, settings changed in LXD are put back, a wrong token
//! fails its server alone, and SIGKILLs of the operator during joins still end in one cluster.
//! The tests share the servers' addresses, so they run one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::container::PlacementStrategy;
use lxd_operator_tests::bare::BareServers;
use lxd_operator_tests::numbered_containers;
use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use serde_json::Value;

static ONE_FORMATION_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Each server's `(phase, reason, message)` in the LxdCluster's status.
fn servers(operator: &Operator, cluster: &str) -> BTreeMap<String, (String, String, String)> {
    let text = operator.kubectl_ok(&["get", "lxdcl", cluster, "-o", "json"]);
    let object: Value = serde_json::from_str(&text).unwrap();
    object["status"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let text = |key: &str| s[key].as_str().unwrap_or_default().to_owned();
            (
                text("name"),
                (text("phase"), text("reason"), text("message")),
            )
        })
        .collect()
}

fn online(operator: &Operator, cluster: &str, names: &[&str]) -> bool {
    let servers = servers(operator, cluster);
    names
        .iter()
        .all(|name| servers.get(*name).is_some_and(|s| s.0 == "Online"))
}

/// Server `number`'s token with its secret changed: LXD refuses it.
fn spoiled(token: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut decoded: Value = serde_json::from_slice(&engine.decode(token).unwrap()).unwrap();
    decoded["secret"] = Value::String("0".repeat(64));
    engine.encode(decoded.to_string())
}

/// The manifest with `extra` YAML lines added to server `name`'s entry.
fn with_settings(manifest: &str, name: &str, extra: &str) -> String {
    manifest.replace(
        &format!("  - name: {name}\n"),
        &format!("  - name: {name}\n{extra}"),
    )
}

fn patch_servers(operator: &Operator, cluster: &str, keep: impl Fn(&Value) -> bool) {
    let text = operator.kubectl_ok(&["get", "lxdcl", cluster, "-o", "json"]);
    let object: Value = serde_json::from_str(&text).unwrap();
    let kept: Vec<Value> = object["spec"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| keep(s))
        .cloned()
        .collect();
    let patch = serde_json::json!({"spec": {"servers": kept}}).to_string();
    operator.kubectl_ok(&["patch", "lxdcl", cluster, "--type", "merge", "-p", &patch]);
}

fn containers_on(namespace: &str, count: usize) -> Vec<LxdContainer> {
    numbered_containers(namespace, "f", count, |c| {
        c.cluster("formed").strategy(PlacementStrategy::Spread)
    })
}

#[test]
fn bare_servers_become_one_cluster_as_written_and_its_membership_follows_the_spec() {
    let _one = ONE_FORMATION_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let bare = BareServers::up(5, 4);
    let operator = Operator::start(Mode::Standalone);
    let namespace = operator.namespace("formation");

    // node5 asks for a failure domain, a group and a label; node7's token is spoiled.
    // Its Secrets where the operator reads Secrets (the standalone default).
    let manifest = bare.manifest("default", "formed");
    let manifest = with_settings(
        &manifest,
        "node5",
        "    failureDomain: rack-b\n    groups: [fast]\n    labels: {disk: ssd}\n",
    );
    let manifest = manifest.replace(&bare.token(7), &spoiled(&bare.token(7)));
    // node8 is left out for now (its token Secret is applied all the same).
    let node8 = "  - name: node8\n    address: https://127.0.0.8:8443\n    trustTokenSecretRef: {namespace: default, name: lxd-formed-node8-token}\n";
    assert!(manifest.contains(node8), "{manifest}");
    let manifest = manifest.replace(node8, "");
    // A name or an address twice is refused at admission, naming the field; nothing is made.
    for (duplicate, says) in [
        (
            "node5",
            r#"spec.servers[1]: Duplicate value: {"name":"node4"}"#,
        ),
        (
            "node4",
            r#"spec.servers: Invalid value: "array": each server's address must be unique"#,
        ),
    ] {
        let twice = format!(
            "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdCluster\nmetadata: {{name: twice}}\nspec:\n  servers:\n  - {{name: node4, address: 'https://127.0.0.4:8443'}}\n  - {{name: {}, address: 'https://127.0.0.{}:8443'}}\n",
            if duplicate == "node5" {
                "node4"
            } else {
                "node5"
            },
            if duplicate == "node5" { 5 } else { 4 },
        );
        let refused = operator.kubectl_with_input(&["apply", "-f", "-"], &twice);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(says),
            "{stderr}"
        );
    }
    assert!(
        !operator
            .kubectl(&["get", "lxdcl", "twice"])
            .status
            .success()
    );

    let started = Instant::now();
    operator.apply(&manifest);
    wait_for(Duration::from_secs(90), "node4-6 Online", || {
        online(&operator, "formed", &["node4", "node5", "node6"]).then_some(())
    });
    println!(
        "three bare servers formed one cluster in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let failed = wait_for(Duration::from_secs(30), "node7 Failed", || {
        servers(&operator, "formed")
            .get("node7")
            .filter(|s| s.0 == "Failed")
            .cloned()
    });
    assert_eq!(failed.1, "TokenRejected", "{failed:?}");
    assert!(
        failed
            .2
            .contains("No matching certificate add operation found"),
        "LXD's own message: {failed:?}"
    );
    let members = bare.members(4);
    assert_eq!(
        members.keys().collect::<Vec<_>>(),
        ["node4", "node5", "node6"]
    );
    assert_eq!(members["node5"]["failure_domain"], "rack-b");
    assert!(
        members["node5"]["groups"]
            .as_array()
            .unwrap()
            .contains(&"fast".into())
    );
    assert_eq!(members["node5"]["config"]["user.disk"], "ssd");

    // The cluster takes containers (the image came with the first server).
    operator.apply_containers(&containers_on(&namespace, 3));
    wait_for(Duration::from_secs(60), "3 containers Running", || {
        let statuses = operator.statuses(&namespace);
        (statuses.len() == 3 && statuses.values().all(|s| s["phase"] == "Running")).then_some(())
    });

    // node7 gets its real token: it joins. node8 is added to the spec: it joins too.
    operator.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: lxd-formed-node7-token, namespace: default}}\nstringData: {{token: {}}}\n",
        bare.token(7)
    ));
    wait_for(Duration::from_secs(60), "node7 Online", || {
        online(&operator, "formed", &["node7"]).then_some(())
    });
    let text = operator.kubectl_ok(&["get", "lxdcl", "formed", "-o", "json"]);
    let mut servers_now = serde_json::from_str::<Value>(&text).unwrap()["spec"]["servers"].clone();
    servers_now.as_array_mut().unwrap().push(serde_json::json!({
        "name": "node8", "address": "https://127.0.0.8:8443",
        "trustTokenSecretRef": {"namespace": "default", "name": "lxd-formed-node8-token"}}));
    let patch = serde_json::json!({"spec": {"servers": servers_now}}).to_string();
    operator.kubectl_ok(&["patch", "lxdcl", "formed", "--type", "merge", "-p", &patch]);
    wait_for(Duration::from_secs(60), "node8 Online", || {
        online(&operator, "formed", &["node8"]).then_some(())
    });
    assert_eq!(bare.members(4).len(), 5);
    let formed = wait_for(Duration::from_secs(30), "Formed", || {
        let text = operator.kubectl_ok(&["get", "lxdcl", "formed", "-o", "json"]);
        let object: Value = serde_json::from_str(&text).unwrap();
        lxd_operator_tests::condition(&object["status"], "Formed").filter(|c| c["status"] == "True")
    });
    assert_eq!(formed["message"], "all 5 servers are online members");

    // node5's failure domain changed in LXD is put back.
    let edited = bare
        .lxc(4, &["cluster", "show", "node5"])
        .replace("failure_domain: rack-b", "failure_domain: rack-x");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' \"$EDITED\" | LXD_DIR={}/node4 lxc cluster edit node5",
            lxd_operator_tests::bare::bare_dir().display()
        ))
        .env("EDITED", &edited)
        .output()
        .unwrap();
    // LXD took it (the operator may put it back before anyone could look).
    assert!(output.status.success(), "{output:?}");
    wait_for(Duration::from_secs(45), "rack-b put back", || {
        (bare.members(4)["node5"]["failure_domain"] == "rack-b").then_some(())
    });

    // The member holding most of our containers leaves the spec: they move, then it goes.
    let statuses = operator.statuses(&namespace);
    let mut by_member: BTreeMap<String, usize> = BTreeMap::new();
    for status in statuses.values() {
        *by_member
            .entry(status["member"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let leaving = by_member
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, _)| m.clone())
        .unwrap();
    patch_servers(&operator, "formed", |s| s["name"] != leaving.as_str());
    let asked = if leaving == "node4" { 5 } else { 4 };
    wait_for(Duration::from_secs(120), "the member removed", || {
        (!bare.members(asked).contains_key(&leaving)
            && !servers(&operator, "formed").contains_key(&leaving))
        .then_some(())
    });
    let statuses = operator.statuses(&namespace);
    assert!(
        statuses
            .values()
            .all(|s| s["phase"] == "Running" && s["member"] != leaving.as_str()),
        "{statuses:?}"
    );
    operator.delete_containers(&namespace, Duration::from_secs(60));
}

#[test]
fn a_formation_survives_the_operator_killed_during_joins_three_times() {
    let _one = ONE_FORMATION_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let bare = BareServers::up(5, 4);
    let mut operator = Operator::start(Mode::Standalone);
    // Its Secrets where the operator reads Secrets (the standalone default).
    let manifest = bare.manifest("default", "formed");
    let mut killed_during: Vec<String> = Vec::new();
    for kill in 1..=3 {
        // A watch of the LxdCluster: the operator records `Joining` before each join.
        let mut watch = std::process::Command::new("kubectl")
            .args(["get", "lxdcl", "--watch", "-o", "json"])
            .env("KUBECONFIG", operator.kubeconfig())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stream = watch.stdout.take().unwrap();
        if kill == 1 {
            operator.apply(&manifest);
        }
        let joining = serde_json::Deserializer::from_reader(stream)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .find_map(|object| {
                object["status"]["servers"]
                    .as_array()?
                    .iter()
                    .find(|s| {
                        s["reason"] == "Joining"
                            && !killed_during.iter().any(|k| s["name"] == k.as_str())
                    })
                    .and_then(|s| s["name"].as_str().map(str::to_owned))
            })
            .expect("a join seen in the watch");
        operator = operator.crash_and_restart();
        let _ = watch.kill();
        let _ = watch.wait();
        println!("SIGKILL {kill} while {joining} joins");
        killed_during.push(joining);
    }
    let all = ["node4", "node5", "node6", "node7", "node8"];
    wait_for(Duration::from_secs(120), "all five Online", || {
        online(&operator, "formed", &all).then_some(())
    });
    // One cluster of five, as every server sees it.
    for number in 4..=8 {
        let members = bare.members(number);
        assert_eq!(
            members.keys().collect::<Vec<_>>(),
            all,
            "as node{number} sees it"
        );
        assert!(members.values().all(|m| m["status"] == "Online"));
    }
}

#[test]
fn a_cluster_with_neither_endpoints_nor_servers_says_so_in_its_ready_condition() {
    let operator = Operator::start(Mode::Standalone);
    operator.apply(
        "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdCluster\nmetadata: {name: empty}\nspec: {}\n",
    );
    let ready = wait_for(Duration::from_secs(30), "Ready False", || {
        let text = operator.kubectl_ok(&["get", "lxdcl", "empty", "-o", "json"]);
        let object: Value = serde_json::from_str(&text).unwrap();
        lxd_operator_tests::condition(&object["status"], "Ready").filter(|c| c["status"] == "False")
    });
    assert_eq!(ready["reason"], "InvalidSpec", "{ready}");
    assert_eq!(
        ready["message"],
        "spec.endpoints: list at least one endpoint, or servers to form a cluster from"
    );
}
