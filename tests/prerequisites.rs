//! A fresh machine that lacks something: hack/test.sh and hack/demo.sh stop before building,
//! with a message naming what is missing and how to get it. Driven through the shell library
//! both scripts source, with a PATH that holds only fakes and the few tools the checks use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use lxd_operator_tests::repo_root;

/// A fake tool: its name and what it prints.
type Tool<'a> = (&'a str, &'a str);

/// A folder for PATH with the tools the checks use, and fakes of `tools`.
fn machine_with(tools: &[Tool]) -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    for tool in ["sed", "awk", "sort", "head", "cat"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|path| path.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(real, bin.path().join(tool)).unwrap();
    }
    for (name, output) in tools {
        let path = bin.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{output}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Runs `check` (a function of hack/lib/prerequisites.sh) on that machine: (success, stderr).
fn run_check(machine: &tempfile::TempDir, check: &str) -> (bool, String) {
    let output = Command::new("/bin/bash")
        .arg("-c")
        .arg(format!(". hack/lib/prerequisites.sh; {check}"))
        .current_dir(repo_root())
        .env_clear()
        .env("PATH", machine.path())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn each_missing_prerequisite_stops_the_scripts_with_what_to_install() {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let msrv = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|version| version.trim_matches('"').to_owned())
        .expect("rust-version in Cargo.toml");
    let too_old = format!("Rust {msrv} or newer is needed, this is 1.80.0: rustup update stable");
    let cargo = ("cargo", "cargo 1.95.0");
    let kubectl = ("kubectl", "v1.32.0");
    let cases: [(&[Tool], &str, Option<&str>); 5] = [
        (
            &[],
            "check_toolchain",
            Some("cargo is missing: install Rust with rustup"),
        ),
        (
            &[cargo, ("rustc", "rustc 1.80.0 (abc 2024-07-21)"), kubectl],
            "check_toolchain",
            Some(too_old.as_str()),
        ),
        (
            &[cargo, ("rustc", "rustc 1.95.0 (abc 2026-04-14)")],
            "check_toolchain",
            Some("kubectl is missing: install it"),
        ),
        (
            &[cargo, ("rustc", "rustc 1.95.0 (abc 2026-04-14)"), kubectl],
            "check_toolchain",
            None,
        ),
        (
            &[],
            "python_env",
            Some("python3 is missing: apt-get install python3 python3-venv"),
        ),
    ];
    for (tools, check, expected) in cases {
        let machine = machine_with(tools);
        let (ok, stderr) = run_check(&machine, check);
        match expected {
            Some(message) => {
                assert!(!ok, "{check} passed with {tools:?}");
                assert!(stderr.contains(message), "{tools:?}: {stderr}");
            }
            None => assert!(ok, "{tools:?}: {stderr}"),
        }
    }
}
