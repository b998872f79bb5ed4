//! The embedded API server through the official Python client (`kubernetes` from PyPI,
//! installed by hack/test.sh): the script in tests/python/ creates, lists, watches, patches and
//! patches status of LxdContainers through `CustomObjectsApi`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use lxd_operator_tests::operator::{Mode, Operator};

#[test]
fn the_python_client_creates_lists_watches_and_patches_containers() {
    let operator = Operator::start(Mode::Apiserver);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/custom_objects.py");
    let output = Command::new(lxd_operator_tests::python())
        .arg(script)
        .arg(operator.kubeconfig())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok"), "{stdout}");
}
