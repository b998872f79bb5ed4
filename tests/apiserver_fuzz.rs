//! Property-based testing of the embedded API server by a tool nobody here wrote: schemathesis
//! (installed by hack/test.sh) reads the server's own OpenAPI document and sends thousands of
//! schema-valid and schema-invalid requests to every operation in it, names fuzzed and names of
//! existing objects. Every answer must be below 500 on a connection that stays up, with a status
//! code, content type and body the document names. See tests/python/api_fuzz.py for what it
//! leaves out and why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use lxd_operator_tests::operator::{Mode, Operator};

/// Examples per operation and pass: about 6,600 requests in all, 1.5 minutes here.
const EXAMPLES: &str = "10";

#[test]
fn thousands_of_generated_requests_get_no_5xx_and_only_answers_the_openapi_document_names() {
    let operator = Operator::start(Mode::Apiserver);
    let workdir = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/api_fuzz.py");
    let output = Command::new(lxd_operator_tests::python())
        .arg(script)
        .arg(operator.kubeconfig())
        .arg(workdir.path())
        .arg(EXAMPLES)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("pass '") || line.starts_with("api fuzz:"))
        .collect();
    println!("{}", summary.join("\n"));
    assert!(
        output.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        operator.log()
    );
}
