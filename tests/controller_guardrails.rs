//! A namespace is a tenant boundary only if what a container may ask of LXD is bounded: the
//! LxdCluster's guardrails refuse what hands out the host, at admission (nothing stored,
//! nothing in LXD) and again in the controller, and an administrator opens doors one by one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use lxd_operator_tests::operator::{Operator, wait_for};
use lxd_operator_tests::{TestCluster, condition, http_get, managed_instances};

/// An LxdContainer `name` whose spec has `fields` (JSON members) beside cluster and image.
fn container(namespace: &str, name: &str, fields: &str) -> String {
    let fields = if fields.is_empty() {
        String::new()
    } else {
        format!(", {fields}")
    };
    format!(
        r#"{{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
  "metadata": {{"name": "{name}", "namespace": "{namespace}"}},
  "spec": {{"clusterRef": {{"name": "local"}}, "image": {{"alias": "busybox"}}{fields}}}}}"#
    )
}

/// Each asks LXD for a way out to the host; the field the refusal must name.
const ESCAPES: &[(&str, &str)] = &[
    (
        r#""config": {"security.privileged": "true"}"#,
        r#"spec.config["security.privileged"]"#,
    ),
    (
        r#""config": {"security.nesting": "true"}"#,
        r#"spec.config["security.nesting"]"#,
    ),
    (
        r#""config": {"security.idmap.base": "0"}"#,
        r#"spec.config["security.idmap.base"]"#,
    ),
    (
        r#""config": {"security.syscalls.intercept.mknod": "true"}"#,
        r#"spec.config["security.syscalls.intercept.mknod"]"#,
    ),
    (
        r#""config": {"security.syscalls.intercept.mount": "true"}"#,
        r#"spec.config["security.syscalls.intercept.mount"]"#,
    ),
    (
        r#""config": {"raw.lxc": "lxc.apparmor.profile=unconfined"}"#,
        r#"spec.config["raw.lxc"]"#,
    ),
    (
        r#""config": {"raw.idmap": "both 0 0"}"#,
        r#"spec.config["raw.idmap"]"#,
    ),
    (
        r#""config": {"raw.apparmor": "mount,"}"#,
        r#"spec.config["raw.apparmor"]"#,
    ),
    (
        r#""config": {"linux.kernel_modules": "ip_tables"}"#,
        r#"spec.config["linux.kernel_modules"]"#,
    ),
    (
        r#""config": {"nvidia.runtime": "true"}"#,
        r#"spec.config["nvidia.runtime"]"#,
    ),
    (
        r#""devices": {"root2": {"type": "disk", "source": "/", "path": "/host"}}"#,
        r#"spec.devices["root2"].source"#,
    ),
    (
        r#""devices": {"etc": {"type": "disk", "source": "/etc", "path": "/etc2"}}"#,
        r#"spec.devices["etc"].source"#,
    ),
    (
        r#""devices": {"lxd": {"type": "disk", "source": "/var/lib/lxd", "path": "/x"}}"#,
        r#"spec.devices["lxd"].source"#,
    ),
    (
        r#""devices": {"sda": {"type": "disk", "source": "/dev/sda", "path": "/x"}}"#,
        r#"spec.devices["sda"].source"#,
    ),
    (
        r#""devices": {"vol": {"type": "disk", "pool": "local", "source": "/root", "path": "/x"}}"#,
        r#"spec.devices["vol"].source"#,
    ),
    (
        r#""devices": {"kmsg": {"type": "unix-char", "source": "/dev/kmsg"}}"#,
        r#"spec.devices["kmsg"].type"#,
    ),
    (
        r#""devices": {"blk": {"type": "unix-block", "source": "/dev/sda"}}"#,
        r#"spec.devices["blk"].type"#,
    ),
    (
        r#""devices": {"g": {"type": "gpu"}}"#,
        r#"spec.devices["g"].type"#,
    ),
    (
        r#""devices": {"u": {"type": "usb"}}"#,
        r#"spec.devices["u"].type"#,
    ),
    (
        r#""devices": {"p": {"type": "pci", "address": "0000:00:02.0"}}"#,
        r#"spec.devices["p"].type"#,
    ),
    (
        r#""devices": {"eth": {"type": "nic", "nictype": "physical", "parent": "eth0"}}"#,
        r#"spec.devices["eth"].nictype"#,
    ),
    (
        r#""devices": {"mv": {"type": "nic", "nictype": "macvlan", "parent": "eth0"}}"#,
        r#"spec.devices["mv"].nictype"#,
    ),
    (
        r#""devices": {"web": {"type": "proxy", "listen": "tcp:0.0.0.0:80", "connect": "tcp:127.0.0.1:80"}}"#,
        r#"spec.devices["web"].bind"#,
    ),
];

#[test]
fn every_way_out_to_the_host_is_refused_at_admission_and_nothing_reaches_lxd() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("guardrails");
    assert!(ESCAPES.len() >= 20);
    for (index, (fields, field)) in ESCAPES.iter().enumerate() {
        let output = operator.kubectl_with_input(
            &["apply", "-f", "-"],
            &container(&namespace, &format!("escape-{index}"), fields),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{fields} was admitted");
        assert!(
            stderr.contains(field) && stderr.contains("denied by cluster local's policy"),
            "{fields}: {stderr}"
        );
    }
    // A set whose template asks the same is refused too.
    let set = r#"{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
      "metadata": {"name": "root", "namespace": "NS"},
      "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "root"}},
        "template": {"metadata": {"labels": {"app": "root"}},
          "spec": {"clusterRef": {"name": "local"}, "image": {"alias": "busybox"},
            "config": {"security.privileged": "true"}}}}}"#
        .replace("NS", &namespace);
    let output = operator.kubectl_with_input(&["apply", "-f", "-"], &set);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"spec.template.spec.config["security.privileged"]"#),
        "{stderr}"
    );
    // An ordinary container still goes through, and runs.
    operator.kubectl_with_input(
        &["apply", "-f", "-"],
        &container(&namespace, "plain", r#""config": {"user.role": "web"}"#),
    );
    wait_for(
        Duration::from_secs(120),
        "the plain container Running",
        || {
            let statuses = operator.statuses(&namespace);
            (statuses.len() == 1 && statuses["plain"]["phase"] == "Running").then_some(())
        },
    );
    let stored = operator.kubectl_ok(&["get", "lxdc,lxdcs", "-n", &namespace, "-o", "name"]);
    assert_eq!(stored.trim(), "lxdcontainer.lxd-operator.dev/plain");
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(instances.len(), 1, "only the plain container is in LXD");
    operator.delete_containers(&namespace, Duration::from_secs(120));
}

#[test]
fn an_opened_key_passes_and_a_policy_tightened_later_leaves_what_runs_and_refuses_anew() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("guardrails-open");
    let nested = container(
        &namespace,
        "nested",
        r#""config": {"security.nesting": "true"}"#,
    );

    let refused = operator.kubectl_with_input(&["apply", "-f", "-"], &nested);
    assert!(!refused.status.success());
    operator.patch_cluster(r#"{"guardrails":{"allowConfigKeys":["security.nesting"]}}"#);
    operator.apply(&nested);
    wait_for(
        Duration::from_secs(120),
        "the nested container Running",
        || (operator.statuses(&namespace)["nested"]["phase"] == "Running").then_some(()),
    );
    let instances = managed_instances(cluster, &namespace);
    assert_eq!(instances.len(), 1);

    // The administrator closes the door again.
    operator.patch_cluster(r#"{"guardrails":null}"#);
    let admitted = wait_for(
        Duration::from_secs(60),
        "the container saying it would now be refused",
        || {
            let status = operator.statuses(&namespace)["nested"].clone();
            condition(&status, "Admitted").filter(|c| c["status"] == "False")
        },
    );
    assert_eq!(admitted["reason"], "WouldNowBeRefused");
    let message = admitted["message"].as_str().unwrap();
    assert!(
        message.contains(r#"spec.config["security.nesting"]"#),
        "{message}"
    );
    let still = managed_instances(cluster, &namespace);
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].status, "Running", "what runs keeps running");
    assert_eq!(still[0].uid, instances[0].uid);

    // An unrelated change to it still goes through; a new one asking the same does not.
    operator.kubectl_ok(&["label", "lxdc", "nested", "-n", &namespace, "team=a"]);
    operator.kubectl_ok(&[
        "patch",
        "lxdc",
        "nested",
        "-n",
        &namespace,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"config":{"user.note":"kept"}}}"#,
    ]);
    let again = operator.kubectl_with_input(
        &["apply", "-f", "-"],
        &container(
            &namespace,
            "nested-2",
            r#""config": {"security.nesting": "true"}"#,
        ),
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(r#"spec.config["security.nesting"]"#),
        "{stderr}"
    );
    operator.delete_containers(&namespace, Duration::from_secs(120));
    assert!(managed_instances(cluster, &namespace).is_empty());
}

#[test]
fn a_cluster_admits_only_the_namespaces_its_selector_selects() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let team_a = operator.namespace("team-a");
    let team_b = operator.namespace("team-b");
    operator.kubectl_ok(&["label", "namespace", &team_a, "lxd-operator.dev/tenant=yes"]);
    operator.patch_cluster(
        r#"{"namespaceSelector":{"matchLabels":{"lxd-operator.dev/tenant":"yes"}}}"#,
    );

    operator.apply(&container(&team_a, "app", ""));
    let refused =
        operator.kubectl_with_input(&["apply", "-f", "-"], &container(&team_b, "app", ""));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("spec.clusterRef.name")
            && stderr.contains(&format!(
                "namespace {team_b} is not admitted to cluster local"
            )),
        "{stderr}"
    );
    wait_for(
        Duration::from_secs(120),
        "team-a's container Running",
        || (operator.statuses(&team_a)["app"]["phase"] == "Running").then_some(()),
    );
    assert_eq!(managed_instances(cluster, &team_a).len(), 1);
    assert!(managed_instances(cluster, &team_b).is_empty());
    assert!(operator.containers(&team_b).is_empty());

    // team-a may not move its container to a cluster that admits no namespace of it, and a
    // set's refusal names the template's field.
    operator.apply(
        r#"{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdCluster",
  "metadata": {"name": "closed"},
  "spec": {"endpoints": ["https://127.0.0.9:1"], "insecureSkipTlsVerify": true,
    "namespaceSelector": {"matchLabels": {"nobody": "yes"}}}}"#,
    );
    let moved = operator.kubectl(&[
        "patch",
        "lxdc",
        "app",
        "-n",
        &team_a,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"clusterRef":{"name":"closed"}}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&moved.stderr);
    assert!(
        !moved.status.success()
            && stderr.contains(&format!(
                "namespace {team_a} is not admitted to cluster closed"
            )),
        "{stderr}"
    );
    let set = format!(
        r#"{{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
  "metadata": {{"name": "s", "namespace": "{team_b}"}},
  "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "s"}}}},
    "template": {{"metadata": {{"labels": {{"app": "s"}}}},
      "spec": {{"clusterRef": {{"name": "local"}}, "image": {{"alias": "busybox"}}}}}}}}}}"#
    );
    let refused = operator.kubectl_with_input(&["apply", "-f", "-"], &set);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("spec.template.spec.clusterRef.name"),
        "{stderr}"
    );
    operator.kubectl_ok(&["delete", "lxdcluster", "closed"]);
    operator.delete_containers(&team_a, Duration::from_secs(120));
}

#[test]
fn a_namespace_over_its_quota_is_refused_with_the_figures_and_a_set_says_so() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let namespace = operator.namespace("quota");
    operator.patch_cluster(&format!(
        r#"{{"quotas":{{"namespaces":{{"{namespace}":{{"containers":3,"cpu":2}}}}}}}}"#
    ));
    let half_a_core = r#""resources": {"cpu": 0.5, "memory": "64Mi"}"#;
    for name in ["q-1", "q-2", "q-3"] {
        operator.apply(&container(&namespace, name, half_a_core));
    }
    let fourth = operator.kubectl_with_input(
        &["apply", "-f", "-"],
        &container(&namespace, "q-4", half_a_core),
    );
    let stderr = String::from_utf8_lossy(&fourth.stderr);
    assert!(!fourth.status.success());
    assert!(
        stderr.contains(&format!(
            "exceeded quota of namespace {namespace} on cluster local: requested: containers=1,cpu=0.5, used: containers=3,cpu=1.5, limited: containers=3,cpu=2"
        )),
        "{stderr}"
    );
    // Under a CPU quota a container must say what it asks.
    let without_resources =
        operator.kubectl_with_input(&["apply", "-f", "-"], &container(&namespace, "q-5", ""));
    assert!(
        String::from_utf8_lossy(&without_resources.stderr).contains("must specify resources.cpu")
    );
    wait_for(Duration::from_secs(120), "the three Running", || {
        let statuses = operator.statuses(&namespace);
        (statuses.len() == 3 && statuses.values().all(|s| s["phase"] == "Running")).then_some(())
    });
    assert_eq!(managed_instances(cluster, &namespace).len(), 3);
    // The cluster's status and the metrics say what the namespace holds against its quota.
    let reported = wait_for(Duration::from_secs(60), "quota usage in status", || {
        let local: serde_json::Value = serde_json::from_str(&operator.kubectl_ok(&[
            "get",
            "lxdcluster",
            "local",
            "-o",
            "json",
        ]))
        .ok()?;
        local["status"]["quotas"]
            .as_array()?
            .iter()
            .find(|q| q["namespace"] == namespace.as_str() && q["used"]["containers"] == 3)
            .cloned()
    });
    assert_eq!(reported["used"]["cpu"], 1.5);
    assert_eq!(reported["hard"]["containers"], 3);
    assert_eq!(reported["hard"]["cpu"].as_f64(), Some(2.0));
    let (_, metrics) = http_get(&format!(
        "{}/metrics",
        operator.metrics_url.as_ref().unwrap()
    ));
    for line in [
        format!(
            r#"lxd_operator_quota_used{{cluster="local",namespace="{namespace}",resource="cpu"}} 1.5"#
        ),
        format!(
            r#"lxd_operator_quota_hard{{cluster="local",namespace="{namespace}",resource="containers"}} 3"#
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line} not in\n{metrics}"
        );
    }

    // Room for two more containers, a set asks for four: two children, and the set says why.
    operator.patch_cluster(&format!(
        r#"{{"quotas":{{"namespaces":{{"{namespace}":{{"containers":5,"cpu":null}}}}}}}}"#
    ));
    operator.apply(&format!(
        r#"{{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
  "metadata": {{"name": "pool", "namespace": "{namespace}"}},
  "spec": {{"replicas": 4, "selector": {{"matchLabels": {{"app": "pool"}}}},
    "template": {{"metadata": {{"labels": {{"app": "pool"}}}},
      "spec": {{"clusterRef": {{"name": "local"}}, "image": {{"alias": "busybox"}}}}}}}}}}"#
    ));
    let progressing = wait_for(
        Duration::from_secs(60),
        "the set saying the quota holds it",
        || {
            let set: serde_json::Value = serde_json::from_str(
                &operator.kubectl_ok(&["get", "lxdcs", "pool", "-n", &namespace, "-o", "json"]),
            )
            .ok()?;
            condition(&set["status"], "Progressing").filter(|c| c["reason"] == "QuotaExceeded")
        },
    );
    let message = progressing["message"].as_str().unwrap();
    assert!(message.contains("exceeded quota"), "{message}");
    assert_eq!(operator.containers(&namespace).len(), 5);
    operator.kubectl_ok(&[
        "delete",
        "lxdcs",
        "pool",
        "-n",
        &namespace,
        "--timeout=120s",
    ]);
    operator.delete_containers(&namespace, Duration::from_secs(120));
    wait_for(Duration::from_secs(120), "nothing left in LXD", || {
        managed_instances(cluster, &namespace)
            .is_empty()
            .then_some(())
    });
}

#[test]
fn a_namespace_with_a_project_of_its_own_finds_exactly_its_containers_there() {
    let cluster = TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    let team_a = operator.namespace("team-a");
    let team_b = operator.namespace("team-b");
    operator.kubectl_ok(&["label", "namespace", &team_a, "lxd-operator.dev/tenant=yes"]);
    operator.patch_cluster(&format!(
        r#"{{"projectMode":"PerNamespace","namespaceSelector":{{"matchLabels":{{"lxd-operator.dev/tenant":"yes"}}}},"quotas":{{"namespaces":{{"{team_a}":{{"containers":3,"memory":"512Mi"}}}}}}}}"#
    ));
    let refused =
        operator.kubectl_with_input(&["apply", "-f", "-"], &container(&team_b, "app-1", ""));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains(&format!(
                "namespace {team_b} is not admitted to cluster local"
            )),
        "{stderr}"
    );
    let small = r#""resources": {"memory": "64Mi"}"#;
    for name in ["app-1", "app-2"] {
        operator.apply(&container(&team_a, name, small));
    }
    wait_for(Duration::from_secs(120), "team-a's two Running", || {
        let statuses = operator.statuses(&team_a);
        (statuses.len() == 2 && statuses.values().all(|s| s["phase"] == "Running")).then_some(())
    });

    // `lxc list --project team-a` shows the team exactly its own containers; the default
    // project none of them.
    let listing: serde_json::Value =
        serde_json::from_str(&cluster.lxc(&["list", "--project", &team_a, "--format", "json"]))
            .unwrap();
    let mut owners: Vec<(String, String)> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["status"], "Running", "{i}");
            (
                i["config"]["user.lxd-operator.namespace"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                i["config"]["user.lxd-operator.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        [
            (team_a.clone(), "app-1".to_owned()),
            (team_a.clone(), "app-2".to_owned())
        ]
    );
    assert!(managed_instances(cluster, &team_a).is_empty());
    for status in operator.statuses(&team_a).values() {
        assert_eq!(status["project"], team_a.as_str());
    }
    // LXD's project limits hold the namespace's quota as a second wall.
    let limit = |key: &str| {
        cluster
            .lxc(&["project", "get", &team_a, key])
            .trim()
            .to_owned()
    };
    assert_eq!(limit("limits.containers"), "3");
    assert_eq!(limit("limits.memory"), (512u64 << 20).to_string());
    assert_eq!(limit("features.images"), "false");
    assert_eq!(limit("features.profiles"), "false");

    operator.delete_containers(&team_a, Duration::from_secs(120));
    let left = cluster.lxc(&["list", "--project", &team_a, "--format", "csv", "-c", "n"]);
    assert_eq!(left.trim(), "", "instances left in project {team_a}");
    cluster.lxc(&["project", "delete", &team_a]);
    // team-b got nothing: no project, no instance.
    let projects = cluster.lxc(&["project", "list", "--format", "csv"]);
    assert!(!projects.contains(&team_b), "{projects}");
}

#[test]
fn an_lxd_cluster_cannot_have_the_operator_read_a_secret_outside_its_namespace() {
    TestCluster::get();
    let operator = Operator::standalone_with_cluster();
    // A tenant copies the operator's client certificate into its own namespace and points a
    // cluster of its own at it: the operator reads Secrets only in its namespace (here the
    // standalone default, `default`), so it refuses, naming the field, and reads nothing.
    let team = operator.namespace("team");
    let secret = operator.kubectl_ok(&[
        "get",
        "secret",
        "lxd-local-client",
        "-n",
        "default",
        "-o",
        "json",
    ]);
    let mut secret: serde_json::Value = serde_json::from_str(&secret).unwrap();
    secret["metadata"] = serde_json::json!({"name": "lxd-local-client", "namespace": team});
    operator.apply(&secret.to_string());
    let mut cluster: serde_json::Value =
        serde_json::from_str(&operator.kubectl_ok(&["get", "lxdcluster", "local", "-o", "json"]))
            .unwrap();
    cluster["metadata"] = serde_json::json!({"name": "borrowed"});
    cluster["spec"]["clientCertSecretRef"]["namespace"] = serde_json::json!(team);
    cluster.as_object_mut().unwrap().remove("status");
    operator.apply(&cluster.to_string());
    let ready = wait_for(
        Duration::from_secs(30),
        "the cluster refusing the Secret",
        || {
            let cluster: serde_json::Value = serde_json::from_str(&operator.kubectl_ok(&[
                "get",
                "lxdcluster",
                "borrowed",
                "-o",
                "json",
            ]))
            .ok()?;
            condition(&cluster["status"], "Ready").filter(|c| c["reason"] == "SecretOutOfScope")
        },
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "spec.clientCertSecretRef.namespace: Secret in namespace \"{team}\", but the operator reads Secrets only in namespace \"default\""
        )),
        "{message}"
    );
    operator.kubectl_ok(&["delete", "lxdcluster", "borrowed"]);
}
