//! The controller end to end, as a user drives it: `kubectl apply` of LxdContainers against
//! `lxd-operator standalone`, and what then holds in the real LXD cluster and in status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::container::{DesiredState, PlacementStrategy};
use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{
    TestCluster, condition, http_get, managed_instances, numbered_containers,
};
use serde_json::Value;

/// Phase of every LxdContainer in the namespace.
fn phases(operator: &Operator, namespace: &str) -> BTreeMap<String, (String, String)> {
    operator
        .containers(namespace)
        .iter()
        .map(|item| {
            let name = item["metadata"]["name"].as_str().unwrap().to_owned();
            let phase = item["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let member = item["status"]["member"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (name, (phase, member))
        })
        .collect()
}

/// `kubectl patch --type merge` of one LxdContainer, as a user changes it.
fn merge_patch(operator: &Operator, namespace: &str, name: &str, patch: &str) {
    operator.kubectl_ok(&[
        "patch", "lxdc", name, "-n", namespace, "--type", "merge", "-p", patch,
    ]);
}

fn lxd_status(cluster: &TestCluster, instance: &str) -> String {
    let output = cluster.lxc_on(0, &["list", instance, "--format", "csv", "--columns", "s"]);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Sets `spec.state` of container `name` with a merge patch, as a user does, and waits until
/// LXD lists its instance in that state.
fn set_state_and_wait(
    operator: &Operator,
    cluster: &TestCluster,
    namespace: &str,
    name: &str,
    state: &str,
    timeout: Duration,
    what: &str,
) {
    merge_patch(
        operator,
        namespace,
        name,
        &format!(r#"{{"spec":{{"state":"{state}"}}}}"#),
    );
    let instance = format!("{namespace}-{name}");
    wait_for_lxd_status(cluster, &instance, &state.to_uppercase(), timeout, what);
}

/// Waits until LXD lists `instance` in `status` (`RUNNING`, `STOPPED`), for at most `timeout`.
fn wait_for_lxd_status(
    cluster: &TestCluster,
    instance: &str,
    status: &str,
    timeout: Duration,
    what: &str,
) {
    wait_for(timeout, what, || {
        (lxd_status(cluster, instance) == status).then_some(())
    });
}

#[test]
fn ten_containers_applied_at_once_run_within_a_minute_on_more_than_one_member() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("ten");
    let containers = numbered_containers(&namespace, "c", 10, |c| c.cpu(0.5).memory("64Mi"));
    let started = Instant::now();
    operator.apply_containers(&containers);
    let running = wait_for(Duration::from_secs(60), "ten Running containers", || {
        let phases = phases(&operator, &namespace);
        (phases.len() == 10 && phases.values().all(|(phase, _)| phase == "Running"))
            .then_some(phases)
    });
    println!("10 containers Running after {:?}", started.elapsed());
    let members: BTreeSet<&String> = running.values().map(|(_, member)| member).collect();
    assert!(members.len() > 1, "all on one member: {running:?}");
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(
        instances.len(),
        10,
        "each container once in LXD: {instances:?}"
    );
    for instance in &instances {
        assert_eq!(
            running[&instance.owner_name].1, instance.location,
            "status names the member LXD reports"
        );
        assert!(!instance.uid.is_empty());
    }
    let table = operator.kubectl_ok(&["get", "lxdc", "-n", &namespace]);
    assert!(
        table.contains("MEMBER") && table.contains("node"),
        "{table}"
    );
    operator.delete_containers(&namespace, Duration::from_secs(120));
}

#[test]
fn the_desired_state_and_config_changes_reach_lxd() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("state");
    operator.apply_containers(&[LxdContainer::builder("app")
        .namespace(&namespace)
        .config("user.note", "first")
        .build()]);
    let instance = format!("{namespace}-app");
    wait_for_lxd_status(
        cluster,
        &instance,
        "RUNNING",
        Duration::from_secs(60),
        "app Running",
    );

    set_state_and_wait(
        &operator,
        cluster,
        &namespace,
        "app",
        "Stopped",
        Duration::from_secs(30),
        "app Stopped in LXD",
    );
    wait_for(Duration::from_secs(10), "phase Stopped", || {
        (phases(&operator, &namespace)["app"].0 == "Stopped").then_some(())
    });

    set_state_and_wait(
        &operator,
        cluster,
        &namespace,
        "app",
        "Running",
        Duration::from_secs(30),
        "app Running again",
    );

    merge_patch(
        &operator,
        &namespace,
        "app",
        r#"{"spec":{"config":{"user.note":"second"}}}"#,
    );
    wait_for(Duration::from_secs(30), "the config change in LXD", || {
        let output = cluster.lxc_on(0, &["config", "get", &instance, "user.note"]);
        (String::from_utf8_lossy(&output.stdout).trim() == "second").then_some(())
    });
    operator.delete_containers(&namespace, Duration::from_secs(120));
}

#[test]
fn a_stop_or_delete_behind_the_operators_back_is_undone_within_five_seconds() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("drift");
    operator.apply_containers(&[LxdContainer::builder("keep").namespace(&namespace).build()]);
    let instance = format!("{namespace}-keep");
    wait_for_lxd_status(
        cluster,
        &instance,
        "RUNNING",
        Duration::from_secs(60),
        "keep Running",
    );

    cluster.lxc_when_idle(&["stop", "--force", &instance]);
    let stopped = Instant::now();
    wait_for_lxd_status(
        cluster,
        &instance,
        "RUNNING",
        Duration::from_secs(5),
        "the stopped instance to run again",
    );
    println!("restarted after {:?}", stopped.elapsed());

    cluster.lxc_when_idle(&["delete", "--force", &instance]);
    let deleted = Instant::now();
    wait_for_lxd_status(
        cluster,
        &instance,
        "RUNNING",
        Duration::from_secs(5),
        "the deleted instance to run again",
    );
    println!("recreated after {:?}", deleted.elapsed());
    assert_eq!(managed_instances(cluster, &namespace).len(), 1);
    operator.delete_containers(&namespace, Duration::from_secs(120));
}

#[test]
fn an_instance_left_without_its_storage_volume_is_deleted_and_created_again() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("husk");
    operator.apply_containers(&[LxdContainer::builder("app")
        .namespace(&namespace)
        .state(DesiredState::Stopped)
        .build()]);
    let instance = format!("{namespace}-app");
    wait_for(Duration::from_secs(60), "app created and Stopped", || {
        (phases(&operator, &namespace)["app"].0 == "Stopped").then_some(())
    });
    let uuid = || cluster.lxc(&["config", "get", &instance, "volatile.uuid"]);
    let first_uuid = uuid();

    // What a create cut off by its member's death leaves (seen in the member-loss chaos test):
    // the instance's record, with our uid, and no storage volume, neither in the database nor
    // on the member's disk. LXD refuses to start it.
    let member = cluster.lxc(&["list", &instance, "--format", "csv", "--columns", "L"]);
    let member = cluster
        .members
        .iter()
        .position(|m| m == member.trim())
        .expect("the instance's member");
    cluster.sql_global(&format!(
        "DELETE FROM storage_volumes WHERE name = '{instance}' AND type = 0"
    ));
    let volume =
        cluster.lxd_dirs[member].join(format!("storage-pools/local/containers/{instance}"));
    std::fs::remove_dir_all(&volume).expect("remove the volume's folder");
    set_state_and_wait(
        &operator,
        cluster,
        &namespace,
        "app",
        "Running",
        Duration::from_secs(60),
        "the husk replaced by a running instance",
    );
    assert_ne!(uuid(), first_uuid, "the instance was not created again");
    assert_eq!(managed_instances(cluster, &namespace).len(), 1);
    let reasons = operator.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &namespace,
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(reasons.contains("Recreating"), "{reasons}");
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}

#[test]
fn an_instance_that_never_ran_and_cannot_start_is_deleted_and_created_again() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("unstartable");
    operator.apply_containers(&[LxdContainer::builder("app")
        .namespace(&namespace)
        .state(DesiredState::Stopped)
        .build()]);
    let instance = format!("{namespace}-app");
    wait_for(Duration::from_secs(60), "app created and Stopped", || {
        (phases(&operator, &namespace)["app"].0 == "Stopped").then_some(())
    });
    let uuid = || cluster.lxc(&["config", "get", &instance, "volatile.uuid"]);
    let first_uuid = uuid();

    // What a create cut off later by its member's death leaves (seen in the member-loss chaos
    // test): the record and the volume, but not the link from the instance's directory to it.
    // LXD refuses every start ("Failed to handle idmapped storage: Failed expanding symlinks").
    let member = cluster.lxc(&["list", &instance, "--format", "csv", "--columns", "L"]);
    let member = cluster
        .members
        .iter()
        .position(|m| m == member.trim())
        .expect("the instance's member");
    let link = cluster.lxd_dirs[member].join(format!("containers/{instance}"));
    std::fs::remove_file(&link).expect("remove the instance's link to its volume");
    set_state_and_wait(
        &operator,
        cluster,
        &namespace,
        "app",
        "Running",
        Duration::from_secs(60),
        "the unstartable instance replaced by a running one",
    );
    assert_ne!(uuid(), first_uuid, "the instance was not created again");
    assert_eq!(managed_instances(cluster, &namespace).len(), 1);
    let reasons = operator.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &namespace,
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(reasons.contains("Recreating"), "{reasons}");

    // One that ran once keeps its data: a start LXD refuses is reported, not repaired.
    set_state_and_wait(
        &operator,
        cluster,
        &namespace,
        "app",
        "Stopped",
        Duration::from_secs(60),
        "app stopped again",
    );
    let ran_uuid = uuid();
    std::fs::remove_file(&link).expect("remove the link again");
    operator.kubectl_ok(&[
        "patch",
        "lxdc",
        "app",
        "-n",
        &namespace,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"state":"Running"}}"#,
    ]);
    let ready = wait_for(Duration::from_secs(60), "StartFailed in Ready", || {
        let item = operator
            .containers(&namespace)
            .into_iter()
            .find(|c| c["metadata"]["name"] == "app")?;
        condition(&item["status"], "Ready").filter(|r| r["reason"] == "StartFailed")
    });
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("no such file or directory"),
        "{ready}"
    );
    assert_eq!(
        uuid(),
        ran_uuid,
        "an instance that ran must not be replaced"
    );
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}

#[test]
fn deleting_containers_deletes_their_instances() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("delete");
    let containers = numbered_containers(&namespace, "d", 3, |c| c);
    operator.apply_containers(&containers);
    wait_for(Duration::from_secs(60), "three instances", || {
        (managed_instances(cluster, &namespace).len() == 3).then_some(())
    });
    operator.kubectl_ok(&["delete", "lxdc", "d1", "-n", &namespace, "--timeout=60s"]);
    let left: BTreeSet<String> = managed_instances(cluster, &namespace)
        .into_iter()
        .map(|i| i.owner_name)
        .collect();
    assert_eq!(left, BTreeSet::from(["d2".to_owned(), "d3".to_owned()]));
    operator.delete_containers(&namespace, Duration::from_secs(60));
    assert!(
        managed_instances(cluster, &namespace).is_empty(),
        "instances left behind"
    );
}

#[test]
fn a_nonexistent_image_fails_with_lxds_message_and_leaves_no_instance() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("noimage");
    operator.apply_containers(&[LxdContainer::builder("ghost")
        .namespace(&namespace)
        .image("no-such-image")
        .build()]);
    let object: Value = wait_for(Duration::from_secs(30), "phase Failed", || {
        let object: Value = serde_json::from_str(
            &operator.kubectl_ok(&["get", "lxdc", "ghost", "-n", &namespace, "-o", "json"]),
        )
        .unwrap();
        (object["status"]["phase"] == "Failed").then_some(object)
    });
    let ready = condition(&object["status"], "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("Image alias not found"),
        "{ready}"
    );
    assert!(managed_instances(cluster, &namespace).is_empty());
    let described = operator.kubectl_ok(&["describe", "lxdc", "ghost", "-n", &namespace]);
    assert!(
        described.contains("Image alias not found"),
        "the Event is shown:\n{described}"
    );
}

#[test]
fn an_invalid_spec_is_refused_naming_the_field() {
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("invalid");
    // Written by hand: the API types cannot hold a state that does not exist.
    let manifest = format!(
        "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainer\nmetadata: {{name: bad, namespace: {namespace}}}\nspec:\n  clusterRef: {{name: local}}\n  image: {{alias: busybox}}\n  state: Paused\n  resources: {{cpu: -1}}\n"
    );
    let output = operator.kubectl_with_input(&["apply", "-f", "-"], &manifest);
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        error.contains("spec.state: Unsupported value: \"Paused\""),
        "{error}"
    );
    assert!(error.contains("spec.resources.cpu"), "{error}");
}

#[test]
fn metrics_and_health_tell_what_the_controller_did() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("metrics");
    operator.apply_containers(&[LxdContainer::builder("m1")
        .namespace(&namespace)
        .strategy(PlacementStrategy::Spread)
        .build()]);
    let instance = format!("{namespace}-m1");
    wait_for_lxd_status(
        cluster,
        &instance,
        "RUNNING",
        Duration::from_secs(60),
        "m1 Running",
    );
    let base = operator.metrics_url.clone().unwrap();
    assert_eq!(http_get(&format!("{base}/healthz")).0, 200);
    wait_for(Duration::from_secs(10), "ready", || {
        (http_get(&format!("{base}/readyz")).0 == 200).then_some(())
    });
    let (status, metrics) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        value(r#"lxd_operator_reconciles_total{kind="LxdContainer",result="ok"}"#) >= 1.0,
        "{metrics}"
    );
    assert!(
        value(r#"lxd_operator_reconciles_total{kind="LxdCluster",result="ok"}"#) >= 1.0,
        "{metrics}"
    );
    assert!(value("lxd_operator_reconcile_duration_seconds_count") >= 2.0);
    assert_eq!(
        value(r#"lxd_operator_placement_decisions_total{strategy="spread",outcome="placed"}"#),
        1.0,
        "{metrics}"
    );
    assert!(value("lxd_operator_lxd_requests_total") >= 5.0, "{metrics}");
    assert!(
        metrics.contains(r#"method="POST""#),
        "LXD requests are labelled by method"
    );
    assert_eq!(
        value(r#"lxd_operator_lxd_members_online{cluster="local"}"#),
        cluster.members.len() as f64
    );
    assert!(value("lxd_operator_lxd_event_stream_connects_total") >= 1.0);
    assert_eq!(value("lxd_operator_leader"), 1.0);
    operator.delete_containers(&namespace, Duration::from_secs(120));
}
