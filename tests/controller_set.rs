//! LxdContainerSets as a platform team uses them: a fleet applied as one object, spread over
//! zones given as member labels, scaled with `kubectl scale`, updated in a rolling fashion
//! (in place where LXD takes the change live, replaced within `maxUnavailable` otherwise), and
//! deleted with its children. Also: an operator SIGKILLed during a rolling update finishes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::unavailability::Unavailability;
use lxd_operator_tests::{TestCluster, managed_instances};
use serde_json::Value;

/// The tests of this file change members (labels, a drain): one at a time.
static ALONE: Mutex<()> = Mutex::new(());

/// Zone labels on the members for the length of a test (removed again when dropped).
struct Zones<'a> {
    cluster: &'a TestCluster,
}

impl<'a> Zones<'a> {
    /// node1 and node2 in zone a, node3 in zone b.
    fn label(cluster: &'a TestCluster) -> Zones<'a> {
        for (member, zone) in [("node1", "a"), ("node2", "a"), ("node3", "b")] {
            cluster.lxc(&["cluster", "set", member, "user.zone", zone]);
        }
        Zones { cluster }
    }
}

impl Drop for Zones<'_> {
    fn drop(&mut self) {
        for member in ["node1", "node2", "node3"] {
            let _ = self
                .cluster
                .lxc_on(0, &["cluster", "unset", member, "user.zone"]);
        }
    }
}

/// An LxdContainerSet `web` labelled `app: web`, its template's spec made of `fields` (JSON
/// members beside `clusterRef`), and `strategy` (JSON members of `spec` beside the rest).
fn web_set(namespace: &str, replicas: u32, fields: &str, strategy: &str) -> String {
    format!(
        r#"{{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
  "metadata": {{"name": "web", "namespace": "{namespace}"}},
  "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "web"}}}}{strategy},
    "template": {{"metadata": {{"labels": {{"app": "web"}}}},
      "spec": {{"clusterRef": {{"name": "local"}}, {fields}}}}}}}}}"#
    )
}

/// The busybox image by alias.
const BUSYBOX: &str = r#""image": {"alias": "busybox"}"#;

/// Zones hard (maxSkew 1), members inside them soft.
const ZONES_THEN_MEMBERS: &str = r#""image": {"alias": "busybox"}, "placement": {"topologySpreadConstraints": [
    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
    {"maxSkew": 1, "topologyKey": "member", "whenUnsatisfiable": "ScheduleAnyway"}]}"#;

/// Each child's member, once `count` children are Running and the set says so.
fn settled(operator: &Operator, namespace: &str, count: usize) -> BTreeMap<String, String> {
    wait_for(
        Duration::from_secs(240),
        &format!("{count} children Running and the set's status saying so"),
        || {
            let statuses = operator.statuses(namespace);
            let running =
                statuses.len() == count && statuses.values().all(|s| s["phase"] == "Running");
            let set = set_status(operator, namespace);
            (running && set["readyReplicas"] == count && set["replicas"] == count).then(|| {
                statuses
                    .iter()
                    .map(|(name, s)| (name.clone(), s["member"].as_str().unwrap().to_owned()))
                    .collect()
            })
        },
    )
}

fn set_status(operator: &Operator, namespace: &str) -> Value {
    let set: Value = serde_json::from_str(
        &operator.kubectl_ok(&["get", "lxdcs", "web", "-n", namespace, "-o", "json"]),
    )
    .unwrap();
    set["status"].clone()
}

fn per_zone(members: &BTreeMap<String, String>) -> BTreeMap<&'static str, usize> {
    let mut zones = BTreeMap::new();
    for member in members.values() {
        let zone = if member == "node3" { "b" } else { "a" };
        *zones.entry(zone).or_default() += 1;
    }
    zones
}

fn per_member(members: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for member in members.values() {
        *counts.entry(member.clone()).or_default() += 1;
    }
    counts
}

fn skew(counts: &BTreeMap<&'static str, usize>) -> usize {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = if counts.len() < 2 {
        0
    } else {
        counts.values().min().copied().unwrap_or(0)
    };
    max - min
}

#[test]
fn a_set_spreads_over_zones_and_members_scales_both_ways_and_goes_with_its_children() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let _zones = Zones::label(cluster);
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("set-spread");

    operator.apply(&web_set(&namespace, 6, ZONES_THEN_MEMBERS, ""));
    let members = settled(&operator, &namespace, 6);
    let names: BTreeSet<&str> = members.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["web-0", "web-1", "web-2", "web-3", "web-4", "web-5"])
    );
    assert_eq!(per_zone(&members), BTreeMap::from([("a", 3), ("b", 3)]));
    let inside_a = per_member(&members);
    assert!(
        inside_a.get("node1").copied().unwrap_or(0) >= 1
            && inside_a.get("node2").copied().unwrap_or(0) >= 1,
        "zone a's members share its three: {inside_a:?}"
    );
    let columns = operator.kubectl_ok(&["get", "lxdcs", "-n", &namespace]);
    let header: Vec<&str> = columns.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "READY", "UP-TO-DATE", "AGE"]);
    assert!(columns.contains("web "), "{columns}");
    let lines: Vec<&str> = columns.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&lines[1..4], ["6", "6", "6"], "{columns}");

    operator.kubectl_ok(&["scale", "lxdcs/web", "-n", &namespace, "--replicas=9"]);
    let members = settled(&operator, &namespace, 9);
    let zones = per_zone(&members);
    assert!(skew(&zones) <= 1, "9 over the zones: {zones:?}");

    operator.kubectl_ok(&["scale", "lxdcs/web", "-n", &namespace, "--replicas=2"]);
    let members = settled(&operator, &namespace, 2);
    assert_eq!(
        members.keys().map(String::as_str).collect::<Vec<_>>(),
        ["web-0", "web-1"],
        "scaling down removes the highest ordinals"
    );
    assert_eq!(per_zone(&members), BTreeMap::from([("a", 1), ("b", 1)]));
    wait_for(Duration::from_secs(60), "LXD holding just two", || {
        (managed_instances(cluster, &namespace).len() == 2).then_some(())
    });

    delete_set(&operator, cluster, &namespace);
}

/// LXD's own uuid of each instance of the namespace, by instance name.
fn lxd_uuids(cluster: &TestCluster, namespace: &str) -> BTreeMap<String, String> {
    let listing: Value = serde_json::from_str(&cluster.lxc(&["list", "--format", "json"])).unwrap();
    listing
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["config"]["user.lxd-operator.namespace"] == namespace)
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["config"]["volatile.uuid"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits for every child on the set's current revision, Ready, and the set saying so.
fn rolled_out(operator: &Operator, namespace: &str, replicas: usize) -> String {
    wait_for(
        Duration::from_secs(300),
        "every child on the new revision and Ready",
        || {
            let set = set_status(operator, namespace);
            let revision = set["updateRevision"].as_str()?.to_owned();
            let done = set["updatedReplicas"] == replicas
                && set["readyReplicas"] == replicas
                && set["currentRevision"] == revision.as_str();
            let children = operator.containers(namespace);
            let labelled = children.len() == replicas
                && children.iter().all(|c| {
                    c["metadata"]["labels"]["lxd-operator.dev/revision"] == revision.as_str()
                        && c["status"]["phase"] == "Running"
                });
            (done && labelled).then_some(revision)
        },
    )
}

/// `kubectl delete lxdcs web`, as a user ends with it: the children and their instances go.
fn delete_set(operator: &Operator, cluster: &TestCluster, namespace: &str) {
    operator.kubectl_ok(&["delete", "lxdcs", "web", "-n", namespace, "--timeout=120s"]);
    wait_for(
        Duration::from_secs(120),
        "the children and their instances gone",
        || {
            (operator.containers(namespace).is_empty()
                && managed_instances(cluster, namespace).is_empty())
            .then_some(())
        },
    );
}

fn busybox_fingerprint(cluster: &TestCluster) -> String {
    let images: Value =
        serde_json::from_str(&cluster.lxc(&["image", "list", "--format", "json"])).unwrap();
    images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["aliases"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["name"] == "busybox")
        })
        .and_then(|i| i["fingerprint"].as_str())
        .unwrap()
        .to_owned()
}

#[test]
fn a_rolling_update_changes_live_keys_in_place_and_replaces_for_an_image_within_max_unavailable() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("set-update");
    operator.apply(&web_set(&namespace, 6, BUSYBOX, ""));
    settled(&operator, &namespace, 6);
    let first = rolled_out(&operator, &namespace, 6);
    let uuids = lxd_uuids(cluster, &namespace);
    assert_eq!(uuids.len(), 6);

    // A live key: in place, no instance made anew.
    let watch = Unavailability::watch(&operator, &namespace, "", 6);
    let gold = r#""config": {"user.tier": "gold"}"#;
    operator.apply(&web_set(&namespace, 6, &format!("{BUSYBOX}, {gold}"), ""));
    let second = rolled_out(&operator, &namespace, 6);
    assert_ne!(second, first);
    wait_for(
        Duration::from_secs(60),
        "user.tier on every instance",
        || {
            let listing: Value =
                serde_json::from_str(&cluster.lxc(&["list", "--format", "json"])).ok()?;
            let tiers = listing
                .as_array()?
                .iter()
                .filter(|i| i["config"]["user.lxd-operator.namespace"] == namespace.as_str())
                .filter(|i| i["config"]["user.tier"] == "gold")
                .count();
            (tiers == 6).then_some(())
        },
    );
    assert_eq!(
        lxd_uuids(cluster, &namespace),
        uuids,
        "an in-place update recreates no instance"
    );

    // An image change (the same image by fingerprint): each child replaced, one at a time.
    let fingerprint = busybox_fingerprint(cluster);
    let by_fingerprint = format!(r#""image": {{"fingerprint": "{fingerprint}"}}"#);
    operator.apply(&web_set(
        &namespace,
        6,
        &format!("{by_fingerprint}, {gold}"),
        "",
    ));
    let third = rolled_out(&operator, &namespace, 6);
    assert_ne!(third, second);
    let replaced = lxd_uuids(cluster, &namespace);
    assert_eq!(replaced.len(), 6, "each child once in LXD: {replaced:?}");
    assert!(
        replaced
            .values()
            .all(|uuid| !uuids.values().any(|old| old == uuid)),
        "every instance made anew"
    );
    let most = watch.most();
    println!("at most {most} of 6 children not Ready at once");
    assert!(
        most <= 1,
        "{most} children not Ready at once (maxUnavailable 1)"
    );
    delete_set(&operator, cluster, &namespace);
}

#[test]
fn an_operator_killed_three_times_during_a_rolling_update_finishes_it() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let mut operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("set-crash");
    let max_unavailable_2 = r#", "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}"#;
    operator.apply(&web_set(&namespace, 6, BUSYBOX, max_unavailable_2));
    settled(&operator, &namespace, 6);
    let before = lxd_uuids(cluster, &namespace);

    let fingerprint = busybox_fingerprint(cluster);
    let by_fingerprint = format!(r#""image": {{"fingerprint": "{fingerprint}"}}"#);
    operator.apply(&web_set(&namespace, 6, &by_fingerprint, max_unavailable_2));
    for kill in 1..=3 {
        // Kill while the update is under way: once a child more is on the new revision.
        let updated_before = set_status(&operator, &namespace)["updatedReplicas"]
            .as_i64()
            .unwrap_or(0);
        wait_for(Duration::from_secs(120), "the update to move on", || {
            let updated = set_status(&operator, &namespace)["updatedReplicas"]
                .as_i64()
                .unwrap_or(0);
            (updated > updated_before || updated >= 6).then_some(())
        });
        println!("SIGKILL {kill}");
        operator = operator.crash_and_restart();
    }
    rolled_out(&operator, &namespace, 6);
    let after = lxd_uuids(cluster, &namespace);
    assert_eq!(after.len(), 6, "each child once in LXD: {after:?}");
    assert!(
        after
            .values()
            .all(|uuid| !before.values().any(|old| old == uuid)),
        "every child replaced"
    );
    delete_set(&operator, cluster, &namespace);
}

/// Undrains node2 when dropped, whatever the test did.
struct Drained<'a>(&'a Operator);

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&[
            "patch",
            "lxdcluster",
            "local",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"drainedMembers":[]}}"#,
        ]);
    }
}

#[test]
fn a_drain_respects_the_set_s_max_unavailable_as_its_disruption_budget() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("set-drain");
    // Four children on node2 (pinned, then unpinned in place: they stay where they are).
    operator.apply(&web_set(
        &namespace,
        4,
        &format!(r#"{BUSYBOX}, "placement": {{"target": "node2"}}"#),
        "",
    ));
    let members = settled(&operator, &namespace, 4);
    assert!(members.values().all(|m| m == "node2"), "{members:?}");
    operator.apply(&web_set(&namespace, 4, BUSYBOX, ""));
    rolled_out(&operator, &namespace, 4);

    // Four moves may run at once on the cluster; the set allows one child down.
    let watch = Unavailability::watch(&operator, &namespace, "", 4);
    let _undrain = Drained(&operator);
    operator.patch_cluster(r#"{"drainedMembers":["node2"],"maxConcurrentMoves":4}"#);
    wait_for(
        Duration::from_secs(240),
        "every child moved off node2",
        || {
            let statuses = operator.statuses(&namespace);
            let moved = statuses.len() == 4
                && statuses.values().all(|s| {
                    s["phase"] == "Running" && s["member"] != "node2" && s["move"].is_null()
                });
            let instances = managed_instances(cluster, &namespace);
            (moved && instances.len() == 4 && instances.iter().all(|i| i.location != "node2"))
                .then_some(())
        },
    );
    let most = watch.most();
    println!("at most {most} of 4 children not Ready at once during the drain");
    assert!(most <= 1, "{most} children down at once (maxUnavailable 1)");
    delete_set(&operator, cluster, &namespace);
}
