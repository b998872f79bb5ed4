//! The LXD test cluster that every other test stands on: all members online, and a busybox
//! container can be launched on each member by `--target`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lxd_operator_tests::{TestCluster, unique_name};

#[test]
fn every_member_is_online() {
    let cluster = TestCluster::get();
    let listing = cluster.lxc(&["cluster", "list", "--format", "csv"]);
    let online: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(",ONLINE,"))
        .map(|line| line.split(',').next().unwrap())
        .collect();
    assert_eq!(online, cluster.members, "cluster list:\n{listing}");
    assert!(
        cluster.members.len() >= 3,
        "the tests expect at least 3 members"
    );
}

#[test]
fn a_busybox_container_launches_on_each_member_by_target() {
    let cluster = TestCluster::get();
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|member| unique_name(&format!("launch-{member}")))
        .collect();
    for (member, name) in cluster.members.iter().zip(&names) {
        cluster.lxc(&["launch", "busybox", name, "--target", member, "--quiet"]);
    }
    for (member, name) in cluster.members.iter().zip(&names) {
        let row = cluster.lxc(&["list", name, "--format", "csv", "--columns", "nsL"]);
        assert_eq!(row.trim(), format!("{name},RUNNING,{member}"));
        // The container really runs busybox as its init, and has no network device.
        let processes = cluster.lxc(&["exec", name, "--", "ps"]);
        assert!(processes.contains("init"), "{processes}");
        let devices = cluster.lxc(&["config", "show", name, "--expanded"]);
        assert!(
            !devices.contains("type: nic"),
            "test containers must have no network device:\n{devices}"
        );
    }
    for name in &names {
        cluster.lxc(&["delete", "--force", name]);
    }
}

#[test]
fn the_operator_certificate_is_trusted_and_every_member_serves_the_pinned_certificate() {
    let cluster = TestCluster::get();
    let trusted = cluster.lxc(&["query", "/1.0/certificates?recursion=1"]);
    assert!(trusted.contains("lxd-operator"), "{trusted}");
    for (index, endpoint) in cluster.endpoints.iter().enumerate() {
        let host = endpoint.trim_start_matches("https://");
        let output = std::process::Command::new("openssl")
            .args(["s_client", "-connect", host, "-showcerts"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let served = String::from_utf8_lossy(&output.stdout);
        let pinned = std::fs::read_to_string(&cluster.server_cert).unwrap();
        let first_cert = |text: &str| -> String {
            text.lines()
                .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE"))
                .take_while(|line| !line.starts_with("-----END CERTIFICATE"))
                .collect()
        };
        assert_eq!(
            first_cert(&served),
            first_cert(&pinned),
            "member {} serves another certificate",
            index + 1
        );
    }
}
