//! The embedded API server driven by the real kubectl (1.32), as a user types it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use serde_json::Value;

const WEB: &str = "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainer\nmetadata: {name: web-1, labels: {app: web}}\nspec:\n  clusterRef: {name: local}\n  image: {alias: busybox}\n  resources: {cpu: 1, memory: 256Mi}\n";

fn server() -> Operator {
    Operator::start(Mode::Apiserver)
}

fn json(operator: &Operator, args: &[&str]) -> Value {
    serde_json::from_str(&operator.kubectl_ok(args)).unwrap()
}

#[test]
fn api_resources_list_our_kinds_with_short_names_and_the_lxd_category() {
    let operator = server();
    let resources = operator.kubectl_ok(&["api-resources"]);
    for (name, short) in [
        ("lxdcontainers", "lxdc"),
        ("lxdclusters", "lxdcl"),
        ("lxdplacementpolicies", "lxdpp"),
    ] {
        let line = resources
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{resources}"));
        assert!(
            line.contains(short) && line.contains("lxd-operator.dev/v1alpha1"),
            "{line}"
        );
    }
    operator.apply(WEB);
    let all = operator.kubectl_ok(&["get", "lxd", "-A"]);
    assert!(all.contains("lxdcontainer.lxd-operator.dev/web-1"), "{all}");
}

#[test]
fn apply_a_change_and_read_it_back_as_yaml_and_json() {
    let operator = server();
    assert!(operator.apply(WEB).contains("created"));
    assert!(operator.apply(WEB).contains("unchanged"));
    let before = json(&operator, &["get", "lxdc", "web-1", "-o", "json"]);
    assert!(
        operator
            .apply(&WEB.replace("256Mi", "512Mi"))
            .contains("configured")
    );
    let after = json(&operator, &["get", "lxdc", "web-1", "-o", "json"]);
    assert_eq!(after["spec"]["resources"]["memory"], "512Mi");
    assert_eq!(
        after["metadata"]["generation"].as_i64().unwrap(),
        before["metadata"]["generation"].as_i64().unwrap() + 1
    );
    let yaml = operator.kubectl_ok(&["get", "lxdc", "web-1", "-o", "yaml"]);
    assert!(
        yaml.contains("memory: 512Mi") && yaml.contains("uid:"),
        "{yaml}"
    );
    let table = operator.kubectl_ok(&["get", "lxdc"]);
    assert!(
        table.starts_with("NAME") && table.contains("PHASE") && table.contains("web-1"),
        "{table}"
    );
}

#[test]
fn label_and_patch_by_merge_and_by_json_patch() {
    let operator = server();
    operator.apply(WEB);
    operator.kubectl_ok(&["label", "lxdc", "web-1", "tier=front"]);
    assert!(
        operator
            .kubectl_ok(&["get", "lxdc", "-l", "tier=front", "-o", "name"])
            .contains("web-1")
    );
    assert!(
        operator
            .kubectl_ok(&["get", "lxdc", "-l", "tier!=front", "-o", "name"])
            .trim()
            .is_empty()
    );
    operator.kubectl_ok(&[
        "patch",
        "lxdc",
        "web-1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"state":"Stopped"}}"#,
    ]);
    assert_eq!(
        json(&operator, &["get", "lxdc", "web-1", "-o", "json"])["spec"]["state"],
        "Stopped"
    );
    operator.kubectl_ok(&[
        "patch",
        "lxdc",
        "web-1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/state","value":"Frozen"}]"#,
    ]);
    assert_eq!(
        json(&operator, &["get", "lxdc", "web-1", "-o", "json"])["spec"]["state"],
        "Frozen"
    );
    // kubectl's default, strategic merge, is refused for custom resources as Kubernetes does.
    let refused = operator.kubectl(&[
        "patch",
        "lxdc",
        "web-1",
        "-p",
        r#"{"spec":{"state":"Running"}}"#,
    ]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("UnsupportedMediaType")
            || String::from_utf8_lossy(&refused.stderr).contains("not supported")
    );
}

#[test]
fn get_watch_prints_later_changes() {
    let operator = server();
    operator.apply(WEB);
    let mut watch = Command::new("kubectl")
        .args(["get", "lxdc", "-w", "--output-watch-events"])
        .env("KUBECONFIG", operator.kubeconfig())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let first = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        first.contains("EVENT") || first.contains("web-1"),
        "{first}"
    );
    operator.kubectl_ok(&["label", "lxdc", "web-1", "seen=yes"]);
    operator.apply(&WEB.replace("web-1", "web-2"));
    let mut lines = Vec::new();
    while let Ok(line) = receiver.recv_timeout(Duration::from_secs(5)) {
        lines.push(line);
        if lines
            .iter()
            .any(|l| l.contains("ADDED") && l.contains("web-2"))
        {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("MODIFIED") && l.contains("web-1")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ADDED") && l.contains("web-2")),
        "{lines:?}"
    );
}

#[test]
fn delete_waits_for_the_finalizer_and_wait_returns_on_a_condition() {
    let operator = server();
    operator.apply(&WEB.replace(
        "labels: {app: web}}",
        "labels: {app: web}, finalizers: [example.org/hold]}",
    ));
    let mut delete = Command::new("kubectl")
        .args(["delete", "lxdc", "web-1", "--timeout=30s"])
        .env("KUBECONFIG", operator.kubeconfig())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let marked = wait_for(Duration::from_secs(10), "deletionTimestamp", || {
        let object = json(&operator, &["get", "lxdc", "web-1", "-o", "json"]);
        object["metadata"]["deletionTimestamp"]
            .is_string()
            .then_some(object)
    });
    assert_eq!(marked["metadata"]["finalizers"][0], "example.org/hold");
    assert!(
        delete.try_wait().unwrap().is_none(),
        "kubectl delete must wait for the finalizer"
    );
    operator.kubectl_ok(&[
        "patch",
        "lxdc",
        "web-1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
    ]);
    let status = delete.wait().unwrap();
    assert!(status.success());
    assert!(
        !operator.kubectl(&["get", "lxdc", "web-1"]).status.success(),
        "gone"
    );

    operator.apply(&WEB.replace("web-1", "web-3"));
    let mut wait = Command::new("kubectl")
        .args([
            "wait",
            "lxdc/web-3",
            "--for=condition=Ready",
            "--timeout=30s",
        ])
        .env("KUBECONFIG", operator.kubeconfig())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(wait.try_wait().unwrap().is_none());
    let status = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","reason":"Running","message":"ok","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    operator.kubectl_ok(&[
        "patch",
        "lxdc",
        "web-3",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        status,
    ]);
    assert!(wait.wait().unwrap().success());
}

#[test]
fn a_new_crd_is_servable_at_once() {
    let operator = server();
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.org}
spec:
  group: example.org
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"#;
    operator.apply(crd);
    operator
        .apply("apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n");
    assert!(
        operator
            .kubectl_ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.size}"])
            .contains('3')
    );
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", operator.kubeconfig())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 0}\n",
        )
        .unwrap();
    let output = apply.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("spec.size"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn an_invalid_container_is_refused_naming_the_field_and_explain_prints_our_docs() {
    let operator = server();
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", operator.kubeconfig())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(
            WEB.replace("alias: busybox", "fingerprint: NOT-HEX")
                .as_bytes(),
        )
        .unwrap();
    let output = apply.wait_with_output().unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && error.contains("spec.image.fingerprint"),
        "{error}"
    );
    let explained = operator.kubectl_ok(&["explain", "lxdcontainer.spec"]);
    assert!(
        explained.contains("clusterRef")
            && explained.contains("The LxdCluster to run the container on"),
        "{explained}"
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn server_side_apply_owns_fields_and_a_second_manager_needs_force_to_take_them() {
    let operator = server();
    let apply_as = |manager: &str, yaml: &str, force: bool| {
        let mut args = vec![
            "apply",
            "--server-side",
            "--field-manager",
            manager,
            "-f",
            "-",
        ];
        if force {
            args.push("--force-conflicts");
        }
        operator.kubectl_with_input(&args, yaml)
    };
    let memory = |operator: &Operator| {
        json(operator, &["get", "lxdc", "web-1", "-o", "json"])["spec"]["resources"]["memory"]
            .clone()
    };
    let first = apply_as("kubectl", WEB, false);
    assert!(
        text(&first.stdout).contains("serverside-applied"),
        "{}",
        text(&first.stderr)
    );

    // The same manager applies again with a change and one field more.
    let with_note = format!(
        "{}  config: {{user.note: hello}}\n",
        WEB.replace("256Mi", "512Mi")
    );
    let second = apply_as("kubectl", &with_note, false);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let object = json(
        &operator,
        &[
            "get",
            "lxdc",
            "web-1",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    assert_eq!(object["spec"]["resources"]["memory"], "512Mi");
    assert_eq!(object["spec"]["config"]["user.note"], "hello");
    let managers = object["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        managers.iter().any(|m| m["manager"] == "kubectl"
            && m["operation"] == "Apply"
            && m["fieldsV1"]["f:spec"]["f:resources"]["f:memory"].is_object()),
        "{managers:?}"
    );

    // Another manager may not change a field kubectl owns ...
    let other = "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainer\nmetadata: {name: web-1}\nspec:\n  resources: {memory: 1Gi}\n";
    let refused = apply_as("platform-team", other, false);
    let error = text(&refused.stderr);
    assert!(
        !refused.status.success()
            && error.contains("conflict with \"kubectl\"")
            && error.contains(".spec.resources.memory"),
        "{error}"
    );
    assert_eq!(memory(&operator), "512Mi");
    // ... until it forces, and then the field is its own.
    let forced = apply_as("platform-team", other, true);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(memory(&operator), "1Gi");

    // kubectl stops applying the note, which no one else owns: it goes. The memory stays, as
    // the platform team owns it now.
    let without_note = WEB.replace("256Mi", "1Gi");
    let third = apply_as("kubectl", &without_note, false);
    assert!(third.status.success(), "{}", text(&third.stderr));
    let object = json(&operator, &["get", "lxdc", "web-1", "-o", "json"]);
    assert!(
        object["spec"]
            .get("config")
            .is_none_or(|c| c.get("user.note").is_none()),
        "{object}"
    );
    assert_eq!(object["spec"]["resources"]["memory"], "1Gi");
}

#[test]
fn printer_columns_dry_runs_and_field_validation_as_on_a_real_cluster() {
    let operator = server();
    let dry = operator.kubectl_with_input(&["create", "--dry-run=server", "-f", "-"], WEB);
    assert!(
        text(&dry.stdout).contains("created (server dry run)"),
        "{}",
        text(&dry.stderr)
    );
    assert!(!operator.kubectl(&["get", "lxdc", "web-1"]).status.success());

    let unknown = format!("{WEB}  colour: red\n");
    let strict = operator.kubectl_with_input(&["apply", "--validate=strict", "-f", "-"], &unknown);
    let error = text(&strict.stderr);
    assert!(
        !strict.status.success() && error.contains("unknown field \"spec.colour\""),
        "{error}"
    );
    assert!(!operator.kubectl(&["get", "lxdc", "web-1"]).status.success());

    let warn = operator.kubectl_with_input(&["apply", "--validate=warn", "-f", "-"], &unknown);
    assert!(warn.status.success(), "{}", text(&warn.stderr));
    assert!(
        text(&warn.stderr).contains("Warning: unknown field \"spec.colour\""),
        "{}",
        text(&warn.stderr)
    );
    let stored = json(&operator, &["get", "lxdc", "web-1", "-o", "json"]);
    assert!(stored["spec"].get("colour").is_none(), "pruned: {stored}");
    assert_eq!(
        stored["spec"]["state"], "Running",
        "the schema's default is filled in"
    );

    let ignored = operator.kubectl_with_input(
        &["apply", "--validate=false", "-f", "-"],
        &unknown.replace("256Mi", "512Mi"),
    );
    assert!(
        ignored.status.success() && !text(&ignored.stderr).contains("Warning"),
        "{}",
        text(&ignored.stderr)
    );

    let table = operator.kubectl_ok(&["get", "lxdc"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "MEMBER", "IPV4", "AGE"],
        "{table}"
    );
    let wide = operator.kubectl_ok(&["get", "lxdc", "-o", "wide"]);
    let header = wide.lines().next().unwrap();
    assert!(
        header.contains("CLUSTER") && header.contains("IMAGE"),
        "{wide}"
    );
    assert!(wide.contains("local") && wide.contains("busybox"), "{wide}");
}

#[test]
fn the_api_needs_the_token_over_https_and_refuses_oversized_bodies() {
    use std::os::unix::fs::PermissionsExt;
    let operator = server();
    assert!(
        operator.api_url.starts_with("https://"),
        "{}",
        operator.api_url
    );
    let mode = std::fs::metadata(operator.kubeconfig())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds the token");

    let ca = operator.data_dir().join("pki/ca.crt");
    let curl = |extra: &[&str]| {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .args(extra)
            .output()
            .unwrap();
        text(&output.stdout)
    };
    let containers = format!(
        "{}/apis/lxd-operator.dev/v1alpha1/namespaces/default/lxdcontainers",
        operator.api_url
    );
    assert_eq!(curl(&[&containers]), "401", "no token");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer wrong", &containers]),
        "401"
    );
    let bearer = format!("Authorization: Bearer {}", operator.token());
    assert_eq!(curl(&["-H", &bearer, &containers]), "200");
    // Health and version are public, as on a Kubernetes API server.
    assert_eq!(curl(&[&format!("{}/healthz", operator.api_url)]), "200");

    let body = operator.data_dir().join("big.json");
    let padding = "x".repeat(10 * 1024 * 1024);
    std::fs::write(
        &body,
        format!(r#"{{"apiVersion":"lxd-operator.dev/v1alpha1","kind":"LxdContainer","metadata":{{"name":"big","annotations":{{"pad":"{padding}"}}}}}}"#),
    )
    .unwrap();
    let upload = format!("@{}", body.display());
    let args = [
        "-X",
        "POST",
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &upload,
        &containers,
    ];
    assert_eq!(curl(&args), "413", "a 10 MiB body");
    std::fs::write(&body, r#"{"apiVersion": "#).unwrap();
    assert_eq!(curl(&args), "400", "a malformed body");
    std::fs::write(&body, "[".repeat(1_000_000)).unwrap();
    assert_eq!(curl(&args), "400", "a body nested a million levels deep");
    assert!(!operator.kubectl(&["get", "lxdc", "big"]).status.success());
}

#[test]
fn plain_http_is_refused_on_other_addresses_than_loopback() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(lxd_operator_tests::operator_binary())
        .args([
            "apiserver",
            "--insecure-http",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(data_dir.path())
        .output()
        .unwrap();
    let error = text(&output.stderr);
    assert!(
        !output.status.success() && error.contains("loopback only"),
        "{error}"
    );
    assert!(!data_dir.path().join("kubeconfig").exists());
}

#[test]
fn moving_from_client_side_to_server_side_apply_needs_no_force() {
    let operator = server();
    operator.apply(WEB);
    let changed = WEB.replace("256Mi", "512Mi");
    let moved = operator.kubectl_with_input(&["apply", "--server-side", "-f", "-"], &changed);
    assert!(moved.status.success(), "{}", text(&moved.stderr));
    let object = json(&operator, &["get", "lxdc", "web-1", "-o", "json"]);
    assert_eq!(object["spec"]["resources"]["memory"], "512Mi");
    // The last-applied annotation follows, so a client-side apply later compares with it.
    let last_applied =
        object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap();
    assert!(last_applied.contains("512Mi"), "{last_applied}");
    // Another manager still may not take what kubectl owns now.
    let other = operator.kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "ops",
            "-f",
            "-",
        ],
        &WEB.replace("256Mi", "1Gi"),
    );
    assert!(!other.status.success(), "{}", text(&other.stdout));
}

const SET: &str = "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainerSet\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      clusterRef: {name: local}\n      image: {alias: busybox}\n";

#[test]
fn kubectl_scale_changes_a_sets_replicas_and_get_shows_its_columns() {
    let operator = server();
    assert!(operator.apply(SET).contains("created"));
    // kubectl 1.32 sends a merge patch `{"spec":{"replicas":5}}` to …/web/scale, found as an
    // autoscaling/v1 Scale in discovery.
    let scaled = operator.kubectl_ok(&["scale", "lxdcs/web", "--replicas=5"]);
    assert!(scaled.contains("scaled"), "{scaled}");
    let set = json(&operator, &["get", "lxdcs", "web", "-o", "json"]);
    assert_eq!(set["spec"]["replicas"], 5);
    assert_eq!(set["metadata"]["generation"], 2);
    // With a precondition it reads the Scale and replaces it.
    operator.kubectl_ok(&["scale", "lxdcs/web", "--current-replicas=5", "--replicas=3"]);
    let scale = json(
        &operator,
        &["get", "lxdcs", "web", "--subresource=scale", "-o", "json"],
    );
    assert_eq!(
        (&scale["kind"], &scale["spec"]["replicas"]),
        (&Value::from("Scale"), &Value::from(3))
    );
    let refused = operator.kubectl(&[
        "patch",
        "lxdcs",
        "web",
        "--subresource=scale",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":-1}}"#,
    ]);
    assert!(
        text(&refused.stderr)
            .contains("The LxdContainerSet \"web\" is invalid: spec.replicas: Invalid value: -1"),
        "{}",
        text(&refused.stderr)
    );

    let table = operator.kubectl_ok(&["get", "lxdcs"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "DESIRED", "READY", "UP-TO-DATE", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["web", "3"], "{table}");
}

#[test]
fn an_invalid_set_is_refused_naming_the_field_and_nothing_is_stored() {
    let operator = server();
    let placement = |constraint: &str| {
        SET.replace(
            "      image: {alias: busybox}\n",
            &format!(
                "      image: {{alias: busybox}}\n      placement:\n        topologySpreadConstraints: [{constraint}]\n"
            ),
        )
    };
    let cases = [
        (
            SET.replace("matchLabels: {app: web}", "matchLabels: {app: db}"),
            r#"spec.selector: Invalid value: "object": selector does not match the template's labels"#,
        ),
        (
            SET.replace("replicas: 2", "replicas: -1"),
            "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
        ),
        (
            placement("{maxSkew: 0, topologyKey: zone}"),
            "spec.template.spec.placement.topologySpreadConstraints[0].maxSkew: Invalid value: 0",
        ),
        (
            placement("{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: Sometimes}"),
            r#"spec.template.spec.placement.topologySpreadConstraints[0].whenUnsatisfiable: Unsupported value: "Sometimes""#,
        ),
    ];
    for (manifest, expected) in cases {
        let applied = operator.kubectl_with_input(&["apply", "-f", "-"], &manifest);
        let error = text(&applied.stderr);
        assert!(
            !applied.status.success()
                && error.contains("The LxdContainerSet \"web\" is invalid: ")
                && error.contains(expected),
            "{manifest}\n{error}"
        );
        let got = operator.kubectl(&["get", "lxdcs", "web"]);
        assert!(
            text(&got.stderr).contains("NotFound"),
            "stored: {}",
            text(&got.stdout)
        );
    }
}

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: worker-1, labels: {kubernetes.io/hostname: worker-1}}\nspec:\n  taints: [{key: node.kubernetes.io/not-ready, effect: NoSchedule}]\nstatus:\n  capacity: {cpu: \"4\", memory: 16Gi, pods: \"110\"}\n  allocatable: {cpu: \"4\", memory: 15Gi, pods: \"110\"}\n";

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: api-1, labels: {app: api}}\nspec:\n  nodeName: worker-1\n  containers:\n  - name: api\n    image: nginx\n    resources: {requests: {cpu: 500m, memory: 1Gi}}\n";

#[test]
fn nodes_and_pods_are_stored_as_kubelet_leaves_them_and_their_status_goes_through_status() {
    let operator = server();
    // kubelet registers a Node with its capacity in status.
    assert!(operator.apply(NODE).contains("node/worker-1 created"));
    let node = json(&operator, &["get", "node", "worker-1", "-o", "json"]);
    assert_eq!(node["status"]["capacity"]["memory"], "16Gi");
    assert!(operator.apply(POD).contains("pod/api-1 created"));
    // A Pod's status is kubelet's, written through /status; an apply of its spec keeps it.
    operator.kubectl_ok(&[
        "patch",
        "pod",
        "api-1",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    assert!(
        operator
            .apply(&POD.replace("app: api", "app: api, tier: back"))
            .contains("configured")
    );
    let pod = json(&operator, &["get", "po", "api-1", "-o", "json"]);
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["metadata"]["labels"]["tier"], "back");
    // Taints are a list strategic merge patches by key: another taint leaves kubelet's there.
    operator.kubectl_ok(&[
        "taint",
        "node",
        "worker-1",
        "lxd-operator.dev/lxd-pressure=true:NoSchedule",
    ]);
    let taints = json(&operator, &["get", "no", "worker-1", "-o", "json"])["spec"]["taints"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(taints, 2);
    let table = operator.kubectl_ok(&["get", "pods"]);
    let row = table.lines().find(|l| l.starts_with("api-1")).unwrap();
    assert!(
        table.starts_with("NAME") && table.contains("STATUS") && table.contains("NODE"),
        "{table}"
    );
    assert!(
        row.contains("Running") && row.contains("worker-1"),
        "{table}"
    );
}

#[test]
fn apply_prune_with_a_selector_deletes_what_left_the_manifest() {
    let operator = server();
    let config = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{app: site}}}}\ndata: {{a: b}}\n"
        )
    };
    let both = format!("{}---\n{}---\n{WEB}", config("one"), config("two"))
        .replace("labels: {app: web}", "labels: {app: site}");
    let applied =
        operator.kubectl_with_input(&["apply", "--prune", "-l", "app=site", "-f", "-"], &both);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let only_one = config("one");
    let pruned = operator.kubectl_with_input(
        &["apply", "--prune", "-l", "app=site", "-f", "-"],
        &only_one,
    );
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    let out = text(&pruned.stdout);
    assert!(out.contains("configmap/two pruned"), "{out}");
    let names = operator.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    assert!(
        names.contains("configmap/one") && !names.contains("configmap/two"),
        "{names}"
    );
    // Our kinds are not on kubectl's default list: an allowlist names them.
    let ours = operator.kubectl_with_input(
        &[
            "apply",
            "--prune",
            "-l",
            "app=site",
            "--prune-allowlist=core/v1/ConfigMap",
            "--prune-allowlist=lxd-operator.dev/v1alpha1/LxdContainer",
            "-f",
            "-",
        ],
        &only_one,
    );
    assert!(ours.status.success(), "{}", text(&ours.stderr));
    let out = text(&ours.stdout);
    assert!(
        out.contains("lxdcontainer.lxd-operator.dev/web-1 pruned"),
        "{out}"
    );
}

#[test]
fn kubernetes_nodes_settings_are_checked_naming_the_field() {
    let operator = server();
    let cluster = |nodes: &str| {
        format!(
            "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdCluster\nmetadata: {{name: beside}}\nspec:\n  endpoints: [\"unix:///var/lib/lxd/unix.socket\"]\n  kubernetesNodes: {nodes}\n"
        )
    };
    let applied = operator.apply(&cluster(
        "{memberNodes: [{member: node1, node: worker-a.example.org}]}",
    ));
    assert!(applied.contains("created"), "{applied}");
    let stored = json(&operator, &["get", "lxdcl", "beside", "-o", "json"]);
    assert_eq!(
        stored["spec"]["kubernetesNodes"]["taintThresholdPercent"],
        80
    );
    assert_eq!(stored["spec"]["kubernetesNodes"]["matchBy"], "HostName");
    for (nodes, field) in [
        (
            "{taintThresholdPercent: 0}",
            "spec.kubernetesNodes.taintThresholdPercent",
        ),
        (
            "{memberNodes: [{member: node1, node: Worker_A}]}",
            "spec.kubernetesNodes.memberNodes[0].node",
        ),
        ("{matchBy: Label}", "spec.kubernetesNodes.matchBy"),
    ] {
        let refused = operator.kubectl_with_input(&["apply", "-f", "-"], &cluster(nodes));
        let message = text(&refused.stderr);
        assert!(
            !refused.status.success() && message.contains(field),
            "{nodes}: {message}"
        );
    }
}

#[test]
fn a_cluster_asking_an_unknown_project_mode_or_a_bad_project_prefix_is_refused_naming_the_field() {
    let operator = server();
    let cluster = |settings: &str| {
        format!(
            "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdCluster\nmetadata: {{name: tenants}}\nspec:\n  endpoints: [\"unix:///var/lib/lxd/unix.socket\"]\n{settings}"
        )
    };
    let cases = [
        (
            "  projectMode: PerTeam\n",
            r#"spec.projectMode: Unsupported value: "PerTeam""#,
        ),
        (
            "  projectMode: PerNamespace\n  projectPrefix: Team_\n",
            "spec.projectPrefix: Invalid value: \"Team_\"",
        ),
        (
            "  projectMode: PerNamespace\n  projectPrefix: a-prefix-far-too-long-\n",
            "spec.projectPrefix: Too long",
        ),
    ];
    for (settings, expected) in cases {
        let manifest = cluster(settings);
        let applied = operator.kubectl_with_input(&["apply", "-f", "-"], &manifest);
        let error = text(&applied.stderr);
        assert!(
            !applied.status.success() && error.contains(expected),
            "{manifest}\n{error}"
        );
        let got = operator.kubectl(&["get", "lxdcluster", "tenants"]);
        assert!(
            text(&got.stderr).contains("NotFound"),
            "stored: {}",
            text(&got.stdout)
        );
    }
    let accepted = operator.apply(&cluster(
        "  projectMode: PerNamespace\n  projectPrefix: k8s-\n",
    ));
    assert!(accepted.contains("created"), "{accepted}");
}
