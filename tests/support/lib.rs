//! What the integration tests share: the real LXD test cluster that `hack/lxd-cluster.sh`
//! brings up, found through the variables of `hack/lxd-cluster.sh env`; containers as
//! manifests; ([`operator`]) the operator process a test starts, with its shared set-up; and
//! ([`fake_lxd`]) a fake LXD for the faults a real cluster cannot produce on demand.

#![allow(clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod bare;
pub mod fake_lxd;
pub mod operator;
pub mod unavailability;

use lxd_operator::lxd::types::{InstanceCreate, InstanceSource};
use lxd_operator::lxd::{ClientConfig, ClientIdentity, Endpoint, LxdClient, ServerTrust};
use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::testing::LxdContainerBuilder;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python interpreter with the tests' packages: `LXD_OPERATOR_PYTHON` (hack/test.sh sets
/// it), else the virtual environment hack/test.sh makes in target/python, else `python3`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("LXD_OPERATOR_PYTHON") {
        return python.into();
    }
    let venv = repo_root().join("target/python/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// The LXD test cluster, as `hack/lxd-cluster.sh env` describes it.
#[derive(Debug, Clone)]
pub struct TestCluster {
    /// Member names, in order: `node1`, `node2`, ...
    pub members: Vec<String>,
    /// `https://127.0.0.<i>:8443` of each member, in the same order.
    pub endpoints: Vec<String>,
    /// The operator's client certificate and key (PEM).
    pub client_cert: PathBuf,
    /// The client key (PKCS#8 PEM).
    pub client_key: PathBuf,
    /// The cluster certificate every member serves (PEM).
    pub server_cert: PathBuf,
    /// SHA-256 of the cluster certificate's DER, in hex.
    pub server_fingerprint: String,
    /// Each member's `LXD_DIR`, for `lxc` through its always-trusted unix socket.
    pub lxd_dirs: Vec<PathBuf>,
}

impl TestCluster {
    /// The running test cluster. Reads the exports of `hack/lxd-cluster.sh env` (which
    /// `hack/test.sh` sets) or asks the script itself; panics with the command to run when no
    /// cluster is up.
    pub fn get() -> &'static TestCluster {
        static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            let vars = cluster_env();
            let var = |name: &str| {
                vars.get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("hack/lxd-cluster.sh env did not set {name}"))
            };
            let size: usize = var("LXD_CLUSTER_SIZE")
                .parse()
                .expect("LXD_CLUSTER_SIZE is a number");
            TestCluster {
                members: var("LXD_MEMBERS").split(',').map(str::to_owned).collect(),
                endpoints: var("LXD_ENDPOINTS").split(',').map(str::to_owned).collect(),
                client_cert: var("LXD_CLIENT_CERT").into(),
                client_key: var("LXD_CLIENT_KEY").into(),
                server_cert: var("LXD_SERVER_CERT").into(),
                server_fingerprint: var("LXD_SERVER_FINGERPRINT"),
                lxd_dirs: (1..=size)
                    .map(|i| PathBuf::from(var(&format!("LXD_DIR_NODE{i}"))))
                    .collect(),
            }
        })
    }

    /// Runs `lxc ARGS` against member `index` (0-based) through its unix socket.
    pub fn lxc_on(&self, index: usize, args: &[&str]) -> Output {
        Command::new("lxc")
            .args(args)
            .env("LXD_DIR", &self.lxd_dirs[index])
            .output()
            .unwrap_or_else(|e| panic!("cannot run lxc: {e}"))
    }

    /// Runs `lxc ARGS` against the first member and returns its standard output; panics with
    /// lxc's own message when it fails.
    pub fn lxc(&self, args: &[&str]) -> String {
        let output = self.lxc_on(0, args);
        assert!(
            output.status.success(),
            "lxc {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `lxd sql global QUERY` on the first member: for tests that must leave the
    /// cluster's database as a crash would, which no API call can.
    pub fn sql_global(&self, query: &str) -> String {
        let output = Command::new("lxd")
            .args(["sql", "global", query])
            .env("LXD_DIR", &self.lxd_dirs[0])
            .output()
            .unwrap_or_else(|e| panic!("cannot run lxd sql: {e}"));
        assert!(
            output.status.success(),
            "lxd sql global {query} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// [`TestCluster::lxc`], as a user retries it while the instance is busy with an operation
    /// (LXD refuses a second one on an instance, and shows a start as Running before the start
    /// operation ends).
    pub fn lxc_when_idle(&self, args: &[&str]) -> String {
        let what = format!("LXD to accept lxc {}", args.join(" "));
        operator::wait_for(std::time::Duration::from_secs(30), &what, || {
            let output = self.lxc_on(0, args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() {
                return Some(String::from_utf8_lossy(&output.stdout).into_owned());
            }
            assert!(
                stderr.contains("is busy running"),
                "lxc {} failed: {stderr}",
                args.join(" "),
            );
            None
        })
    }
}

/// Force-deletes every LXD instance of these namespaces (by our namespace key), through the
/// first member that answers. For a failing test's clean-up, which runs while the test panics:
/// it never panics itself, and what it cannot delete it leaves.
pub fn remove_instances_of(namespaces: &[String]) {
    if namespaces.is_empty() {
        return;
    }
    let state_dir = std::env::var_os("LXD_CLUSTER_DIR")
        .map_or_else(|| repo_root().join("target/lxd-cluster"), PathBuf::from);
    let lxc = |dir: &Path, args: &[&str]| {
        Command::new("lxc")
            .args(args)
            .env("LXD_DIR", dir)
            .output()
            .ok()
            .filter(|output| output.status.success())
    };
    for member in 1..=9 {
        let dir = state_dir.join(format!("node{member}"));
        if !dir.exists() {
            continue;
        }
        let Some(listed) = lxc(&dir, &["list", "--format", "json"]) else {
            continue;
        };
        let listing: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        for instance in listing.as_array().into_iter().flatten() {
            let namespace = instance["config"]["user.lxd-operator.namespace"].as_str();
            if let (Some(namespace), Some(name)) = (namespace, instance["name"].as_str())
                && namespaces.iter().any(|n| n == namespace)
            {
                let _ = lxc(&dir, &["delete", "--force", name]);
            }
        }
        return;
    }
}

fn cluster_env() -> HashMap<String, String> {
    let names = [
        "LXD_CLUSTER_SIZE",
        "LXD_MEMBERS",
        "LXD_ENDPOINTS",
        "LXD_CLIENT_CERT",
        "LXD_CLIENT_KEY",
        "LXD_SERVER_CERT",
        "LXD_SERVER_FINGERPRINT",
    ];
    if names.iter().all(|name| std::env::var_os(name).is_some()) {
        return std::env::vars()
            .filter(|(name, _)| name.starts_with("LXD_"))
            .collect();
    }
    let script = repo_root().join("hack/lxd-cluster.sh");
    let output = Command::new(&script)
        .arg("env")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "no LXD test cluster is running ({}). Start one with `hack/lxd-cluster.sh up`, or run every test with `hack/test.sh`.",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

/// A process paused with SIGSTOP: its connections stay open and nothing answers, as a half-open
/// peer looks. It goes on (SIGCONT) when this is dropped, whatever the test did.
#[derive(Debug)]
pub struct Paused {
    pid: u32,
}

impl Paused {
    /// Stops the process with this pid until the guard is dropped.
    pub fn process(pid: u32) -> Paused {
        Self::signal(pid, "-STOP");
        Paused { pid }
    }

    fn signal(pid: u32, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        Self::signal(self.pid, "-CONT");
    }
}

impl TestCluster {
    /// Pauses the daemon of the member at this (0-based) index until the guard is dropped.
    pub fn pause_member(&self, index: usize) -> Paused {
        let pid = std::fs::read_to_string(self.lxd_dirs[index].with_extension("pid"))
            .expect("member pid file")
            .trim()
            .parse::<u32>()
            .expect("member pid");
        Paused::process(pid)
    }

    /// CPU seconds the member daemons have used so far (with the children they waited for:
    /// image unpacking, forkstart), for benchmarks to compare ways by the work LXD did.
    pub fn daemons_cpu_seconds(&self) -> f64 {
        self.lxd_dirs
            .iter()
            .filter_map(|dir| std::fs::read_to_string(dir.with_extension("pid")).ok())
            .filter_map(|pid| pid.trim().parse::<u32>().ok())
            .map(|pid| process_cpu_seconds(pid, true))
            .sum()
    }

    /// A client of the cluster through the members at these (0-based) indexes, in this order,
    /// with the operator's certificate and the server pinned by fingerprint.
    pub fn client(&self, members: &[usize]) -> LxdClient {
        LxdClient::new(self.client_config(members)).expect("client")
    }

    /// The configuration [`TestCluster::client`] builds its client from, to change before use.
    pub fn client_config(&self, members: &[usize]) -> ClientConfig {
        let endpoints = members
            .iter()
            .map(|&i| Endpoint::parse(&self.endpoints[i]).expect("endpoint"))
            .collect();
        let identity = ClientIdentity::from_pem(
            &std::fs::read(&self.client_cert).expect("client cert"),
            &std::fs::read(&self.client_key).expect("client key"),
        )
        .expect("client identity");
        let trust = ServerTrust::from_fingerprint(&self.server_fingerprint).expect("fingerprint");
        ClientConfig::new(endpoints, Some(identity), trust)
    }

    /// A client of every member, in order.
    pub fn client_all(&self) -> LxdClient {
        self.client(&(0..self.members.len()).collect::<Vec<_>>())
    }

    /// Runs `hack/lxd-cluster.sh ARGS` (e.g. `stop-member 2`), panicking when it fails.
    pub fn script(&self, args: &[&str]) {
        let status = Command::new(repo_root().join("hack/lxd-cluster.sh"))
            .args(args)
            .status()
            .expect("run hack/lxd-cluster.sh");
        assert!(
            status.success(),
            "hack/lxd-cluster.sh {} failed",
            args.join(" ")
        );
    }

    /// Waits until LXD reports every member ONLINE, for at most `timeout`.
    pub fn wait_all_online(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let output = self.lxc_on(0, &["cluster", "list", "--format", "csv"]);
            let listing = String::from_utf8_lossy(&output.stdout);
            if listing
                .lines()
                .filter(|line| line.contains(",ONLINE,"))
                .count()
                == self.members.len()
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "members not all online after {timeout:?}:\n{listing}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

/// The `lxd-operator` binary of this build (`cargo build` puts it beside the test binaries).
pub fn operator_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    // Test binaries live in target/debug/deps, other binaries in target/debug.
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("lxd-operator"));
    let found = candidates.clone().find(|path| path.is_file());
    found.unwrap_or_else(|| {
        let looked: Vec<String> = candidates.map(|p| p.display().to_string()).collect();
        panic!(
            "lxd-operator is missing ({}): build it first with `cargo build -p lxd-operator`",
            looked.join(", ")
        )
    })
}

/// The LxdCluster named `local` and its client Secret, for this test cluster.
pub fn cluster_manifest() -> String {
    let output = Command::new(repo_root().join("hack/lxd-cluster.sh"))
        .arg("manifest")
        .output()
        .expect("run hack/lxd-cluster.sh manifest");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `container` as the YAML a user would `kubectl apply`.
pub fn manifest(container: &LxdContainer) -> String {
    serde_saphyr::to_string(container).expect("an LxdContainer as YAML")
}

/// Several containers in one YAML stream, as one `kubectl apply -f -` takes them.
pub fn manifests(containers: &[LxdContainer]) -> String {
    containers
        .iter()
        .map(manifest)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `count` containers of `namespace` named `{prefix}1`, `{prefix}2`, ..., each the plain one of
/// [`LxdContainer::builder`] as `shape` changes it.
pub fn numbered_containers(
    namespace: &str,
    prefix: &str,
    count: usize,
    shape: impl Fn(LxdContainerBuilder) -> LxdContainerBuilder,
) -> Vec<LxdContainer> {
    (1..=count)
        .map(|i| shape(LxdContainer::builder(&format!("{prefix}{i}")).namespace(namespace)).build())
        .collect()
}

/// The condition of type `kind` (`Ready`, `Scheduled`, ...) in an object's `status`.
pub fn condition(status: &serde_json::Value, kind: &str) -> Option<serde_json::Value> {
    status["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == kind).cloned())
}

/// An instance the operator manages, as LXD lists it.
#[derive(Debug, Clone)]
pub struct ManagedInstance {
    /// Instance name.
    pub name: String,
    /// `Running`, `Stopped`, ...
    pub status: String,
    /// Member.
    pub location: String,
    /// `user.lxd-operator.uid`.
    pub uid: String,
    /// `user.lxd-operator.name`.
    pub owner_name: String,
}

/// The instances LXD holds for LxdContainers of `namespace`.
pub fn managed_instances(cluster: &TestCluster, namespace: &str) -> Vec<ManagedInstance> {
    let listing: serde_json::Value =
        serde_json::from_str(&cluster.lxc(&["list", "--format", "json"])).expect("lxc list JSON");
    listing
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["config"]["user.lxd-operator.namespace"] == namespace)
        .map(|i| ManagedInstance {
            name: i["name"].as_str().unwrap_or_default().to_owned(),
            status: i["status"].as_str().unwrap_or_default().to_owned(),
            location: i["location"].as_str().unwrap_or_default().to_owned(),
            uid: i["config"]["user.lxd-operator.uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            owner_name: i["config"]["user.lxd-operator.name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// A request for a busybox container (the test cluster's image) named `name`.
pub fn busybox(name: &str) -> InstanceCreate {
    InstanceCreate {
        name: name.to_owned(),
        instance_type: "container".to_owned(),
        source: InstanceSource::alias("busybox"),
        ..InstanceCreate::default()
    }
}

/// A plain HTTP GET of `url` (`http://host:port/path`): the status code and the body.
pub fn http_get(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// CPU seconds (user and system) process `pid` has used, with those of the children it waited
/// for when `with_children`; 0 when it cannot be read.
pub fn process_cpu_seconds(pid: u32, with_children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses: utime is the 12th.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let ticks = if with_children {
        fields.iter().sum()
    } else {
        fields.iter().take(2).sum::<f64>()
    };
    // Linux reports in USER_HZ, 100 on every architecture Debian ships.
    ticks / 100.0
}

/// A name unique to this test run, for instances and objects a test creates.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff)
}
