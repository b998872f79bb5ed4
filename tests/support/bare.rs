//! Bare, unclustered LXD servers on 127.0.0.<i> (`hack/lxd-cluster.sh bare`), for the tests that
//! form a cluster from them. Removed again when dropped, clustered by then or not.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::repo_root;

/// Servers `node<first>` .. `node<first + count - 1>`, each with a trust token for the operator.
#[derive(Debug)]
pub struct BareServers {
    /// Their numbers: server i is `node<i>` on 127.0.0.<i>:8443.
    pub numbers: Vec<u8>,
}

impl BareServers {
    /// Starts `count` bare servers from 127.0.0.`first` on (any left from before are removed).
    pub fn up(count: u8, first: u8) -> BareServers {
        script(&["bare", "down"]);
        script(&["bare", "up", &count.to_string(), &first.to_string()]);
        BareServers {
            numbers: (first..first + count).collect(),
        }
    }

    /// The LxdCluster `name` that forms them, with its client and token Secrets in `namespace`,
    /// as YAML.
    pub fn manifest(&self, namespace: &str, name: &str) -> String {
        script(&["bare", "manifest", namespace, name])
    }

    /// The trust token server `number` issued for the operator.
    pub fn token(&self, number: u8) -> String {
        std::fs::read_to_string(bare_dir().join(format!("node{number}.token")))
            .expect("token file")
            .trim()
            .to_owned()
    }

    /// Runs `lxc ARGS` against server `number` through its unix socket; its standard output.
    pub fn lxc(&self, number: u8, args: &[&str]) -> String {
        let output = self.lxc_output(number, args);
        assert!(
            output.status.success(),
            "lxc {} on node{number}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `lxc ARGS` against server `number`, whatever it answers.
    pub fn lxc_output(&self, number: u8, args: &[&str]) -> Output {
        Command::new("lxc")
            .args(args)
            .env("LXD_DIR", bare_dir().join(format!("node{number}")))
            .output()
            .expect("run lxc")
    }

    /// The cluster's members as server `number` lists them: name -> the member's JSON.
    pub fn members(&self, number: u8) -> std::collections::BTreeMap<String, serde_json::Value> {
        let text = self.lxc(number, &["query", "/1.0/cluster/members?recursion=1"]);
        let members: Vec<serde_json::Value> = serde_json::from_str(&text).expect("members JSON");
        members
            .into_iter()
            .map(|m| (m["server_name"].as_str().unwrap_or_default().to_owned(), m))
            .collect()
    }
}

impl Drop for BareServers {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("hack/lxd-cluster.sh"))
            .args(["bare", "down"])
            .output();
    }
}

/// Where the bare servers keep their state (`LXD_BARE_DIR`, as hack/lxd-cluster.sh has it).
pub fn bare_dir() -> PathBuf {
    std::env::var_os("LXD_BARE_DIR")
        .map_or_else(|| repo_root().join("target/lxd-bare"), PathBuf::from)
}

fn script(args: &[&str]) -> String {
    let output = Command::new(repo_root().join("hack/lxd-cluster.sh"))
        .args(args)
        .output()
        .expect("run hack/lxd-cluster.sh");
    assert!(
        output.status.success(),
        "hack/lxd-cluster.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
