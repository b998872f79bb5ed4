//! Every manifest a user finds in `examples/` (and the LxdCluster the test cluster script
//! prints) reads into the API types and writes back without losing a field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lxd_operator_crds::{LxdCluster, LxdContainer, LxdContainerSet, LxdPlacementPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const CLUSTER_MANIFEST: &str = r#"
apiVersion: lxd-operator.dev/v1alpha1
kind: LxdCluster
metadata: {name: local}
spec:
  endpoints: ["https://127.0.0.1:8443", "https://127.0.0.2:8443", "unix:///var/lib/lxd/unix.socket"]
  clientCertSecretRef: {namespace: default, name: lxd-local-client}
  serverCertificate: {fingerprint: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
  project: default
  defaultPlacementPolicy: balanced
  memberSyncIntervalSeconds: 10
"#;

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .filter(|doc| {
            doc.lines()
                .any(|line| !line.trim().is_empty() && !line.starts_with('#'))
        })
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("bad YAML: {e}\n{doc}")))
        .collect()
}

/// `original` is contained in `written`: every field the user wrote is still there, with an
/// equal value (numbers compared as numbers, so `cpu: 1` matches `1.0`).
fn assert_contained(original: &Value, written: &Value, path: &str) {
    match (original, written) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let other = b
                    .get(key)
                    .unwrap_or_else(|| panic!("field {path}.{key} was lost"));
                assert_contained(value, other, &format!("{path}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: list length changed");
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                assert_contained(x, y, &format!("{path}[{index}]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => assert_eq!(a.as_f64(), b.as_f64(), "{path}"),
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

fn round_trip<K: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(manifest: &Value) {
    let typed: K =
        serde_json::from_value(manifest.clone()).unwrap_or_else(|e| panic!("{e}: {manifest}"));
    let written = serde_json::to_value(&typed).unwrap();
    assert_contained(manifest, &written, "");
    let again: K = serde_json::from_value(written).unwrap();
    assert_eq!(typed, again);
}

fn check(manifest: &Value) {
    match manifest["kind"].as_str() {
        Some("LxdContainer") => round_trip::<LxdContainer>(manifest),
        Some("LxdCluster") => round_trip::<LxdCluster>(manifest),
        Some("LxdContainerSet") => round_trip::<LxdContainerSet>(manifest),
        Some("LxdPlacementPolicy") => round_trip::<LxdPlacementPolicy>(manifest),
        other => panic!("unexpected kind {other:?} in examples"),
    }
}

#[test]
fn every_example_round_trips() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            for manifest in documents(&std::fs::read_to_string(&path).unwrap()) {
                check(&manifest);
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 7,
        "only {checked} example objects found in {}",
        dir.display()
    );
}

#[test]
fn a_cluster_manifest_round_trips() {
    for manifest in documents(CLUSTER_MANIFEST) {
        check(&manifest);
    }
}

#[test]
fn omitted_fields_take_their_documented_defaults() {
    let manifest = documents(
        "apiVersion: lxd-operator.dev/v1alpha1\nkind: LxdContainer\nmetadata: {name: a, namespace: default}\nspec: {clusterRef: {name: local}, image: {alias: busybox}}\n",
    );
    let container: LxdContainer = serde_json::from_value(manifest[0].clone()).unwrap();
    assert_eq!(
        container.spec.state,
        lxd_operator_crds::container::DesiredState::Running
    );
    assert!(
        container.spec.profiles.is_none(),
        "no profiles field means LXD's default profile"
    );
    assert!(!container.spec.ephemeral);
}
