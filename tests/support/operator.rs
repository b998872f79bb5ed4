//! `lxd-operator standalone` (or `apiserver`) started by a test on free loopback ports, with its
//! own data folder, and kubectl pointed at it. Killed when dropped; when dropped by a failing
//! test, it first shows what was not settled, keeps its whole log under target/test-logs, and
//! removes the LXD instances of the namespaces it made, so that one failure does not crowd the
//! members for the tests after it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lxd_operator_crds::LxdContainer;
use serde_json::Value;

use crate::{cluster_manifest, manifests, operator_binary, unique_name};

/// Which command to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// API server and controller.
    Standalone,
    /// API server only.
    Apiserver,
}

/// A running operator process.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    mode: Mode,
    data_dir: tempfile::TempDir,
    /// `127.0.0.1:<port>` the API listens on.
    pub listen: String,
    extra: Vec<String>,
    /// `https://127.0.0.1:<port>` of the API.
    pub api_url: String,
    /// `http://127.0.0.1:<port>` of /metrics, /healthz, /readyz (standalone only).
    pub metrics_url: Option<String>,
    /// The namespaces `namespace` made, whose LXD instances a failing test leaves to be removed.
    namespaces: Mutex<Vec<String>>,
}

impl Operator {
    /// Starts a fresh process.
    pub fn start(mode: Mode) -> Operator {
        let data_dir = tempfile::Builder::new()
            .prefix("lxd-operator-test")
            .tempdir()
            .expect("temp dir");
        Self::spawn(mode, data_dir, "127.0.0.1:0".to_owned(), Vec::new())
    }

    /// Starts `lxd-operator standalone` with the test cluster applied as the LxdCluster `local`
    /// (and its client Secret), as a user sets it up before applying containers.
    pub fn standalone_with_cluster() -> Operator {
        let operator = Self::start(Mode::Standalone);
        operator.apply(&cluster_manifest());
        operator
    }

    /// Starts a fresh process with extra arguments.
    pub fn start_with(mode: Mode, extra: &[&str]) -> Operator {
        let data_dir = tempfile::Builder::new()
            .prefix("lxd-operator-test")
            .tempdir()
            .expect("temp dir");
        Self::spawn(
            mode,
            data_dir,
            "127.0.0.1:0".to_owned(),
            extra.iter().map(|a| (*a).to_owned()).collect(),
        )
    }

    fn spawn(
        mode: Mode,
        data_dir: tempfile::TempDir,
        listen: String,
        extra: Vec<String>,
    ) -> Operator {
        let mut command = Command::new(operator_binary());
        match mode {
            Mode::Standalone => command.args(["standalone", "--metrics-addr", "127.0.0.1:0"]),
            Mode::Apiserver => command.arg("apiserver"),
        };
        command
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--listen", &listen])
            .args(&extra);
        // Appended to: a restart after a crash keeps what the process before it logged.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.path().join("operator.log"))
            .expect("log file");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
            // Benchmarks run it at the level users do (LXD_OPERATOR_TEST_LOG=info).
            .env(
                "RUST_LOG",
                std::env::var("LXD_OPERATOR_TEST_LOG")
                    .unwrap_or_else(|_| "info,lxd_operator=debug".to_owned()),
            )
            .spawn()
            .expect("start lxd-operator");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut api_url = None;
        let mut metrics_url = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while api_url.is_none() || (mode == Mode::Standalone && metrics_url.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = receiver.recv_timeout(left).unwrap_or_else(|_| {
                let log = std::fs::read_to_string(data_dir.path().join("operator.log"))
                    .unwrap_or_default();
                panic!("lxd-operator did not start:\n{log}")
            });
            if let Some(url) = line.strip_prefix("API server listening on ") {
                api_url = Some(url.trim().to_owned());
            }
            if let Some(url) = line.strip_prefix("metrics and health on ") {
                metrics_url = Some(url.trim().to_owned());
            }
        }
        let api_url = api_url.expect("api url");
        let listen = api_url
            .split_once("://")
            .map_or(api_url.as_str(), |(_, address)| address)
            .to_owned();
        Operator {
            child,
            mode,
            data_dir,
            listen,
            extra,
            api_url,
            metrics_url,
            namespaces: Mutex::new(Vec::new()),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The kubeconfig it wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("kubeconfig")
    }

    /// A kube client with the kubeconfig a user gets (the server's CA and token).
    pub async fn kube_client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }

    /// The bearer token in its kubeconfig.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("token"))
            .expect("token")
            .trim()
            .to_owned()
    }

    /// Its data folder.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and starts it again on the same data folder and port.
    pub fn crash_and_restart(self) -> Operator {
        let mode = self.mode;
        self.crash_and_restart_as(mode)
    }

    /// Kills it and starts it again on the same data folder and port as `mode`: `Apiserver`
    /// keeps the objects reachable with kubectl while no controller acts on them.
    pub fn crash_and_restart_as(self, mode: Mode) -> Operator {
        let mut this = self;
        this.kill();
        let data_dir =
            std::mem::replace(&mut this.data_dir, tempfile::tempdir().expect("temp dir"));
        let (listen, extra) = (this.listen.clone(), this.extra.clone());
        let namespaces = std::mem::take(&mut *this.namespaces.lock().expect("namespaces"));
        drop(this);
        let restarted = Self::spawn(mode, data_dir, listen, extra);
        *restarted.namespaces.lock().expect("namespaces") = namespaces;
        restarted
    }

    /// Runs kubectl against it.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .expect("run kubectl")
    }

    /// The names of the Events of `namespace` with `reason`, one a line (`event/<name>`).
    pub fn events_with_reason(&self, namespace: &str, reason: &str) -> String {
        self.kubectl_ok(&[
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            &format!("reason={reason}"),
            "-o",
            "name",
        ])
    }

    /// Merge-patches the status of `resource` `name` in `namespace`, as its controller would.
    pub fn patch_status(&self, resource: &str, namespace: &str, name: &str, patch: &str) {
        self.kubectl_ok(&[
            "patch",
            resource,
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            patch,
        ]);
    }

    /// Runs kubectl and returns its output; panics with kubectl's message when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs kubectl with `input` on its standard input (`-f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write manifest");
        child.wait_with_output().expect("kubectl")
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        let output = self.kubectl_with_input(&["apply", "-f", "-"], yaml);
        assert!(
            output.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates a namespace of the test's own, named from `prefix` ([`unique_name`]), and returns
    /// its name.
    pub fn namespace(&self, prefix: &str) -> String {
        let namespace = unique_name(prefix);
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
        ));
        if let Ok(mut namespaces) = self.namespaces.lock() {
            namespaces.push(namespace.clone());
        }
        namespace
    }

    /// `kubectl apply` of these containers, all in one go.
    pub fn apply_containers(&self, containers: &[LxdContainer]) -> String {
        self.apply(&manifests(containers))
    }

    /// Every LxdContainer of `namespace`, as `kubectl get lxdc -o json` lists them.
    pub fn containers(&self, namespace: &str) -> Vec<Value> {
        let list: Value =
            serde_json::from_str(&self.kubectl_ok(&["get", "lxdc", "-n", namespace, "-o", "json"]))
                .expect("kubectl get lxdc: JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Each LxdContainer's status in `namespace`, by name.
    pub fn statuses(&self, namespace: &str) -> BTreeMap<String, Value> {
        self.containers(namespace)
            .into_iter()
            .map(|item| {
                (
                    item["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    item["status"].clone(),
                )
            })
            .collect()
    }

    /// Merge-patches the spec of the LxdCluster `local` with `spec` (a JSON object), as an
    /// administrator does with `kubectl patch`.
    pub fn patch_cluster(&self, spec: &str) -> String {
        self.kubectl_ok(&[
            "patch",
            "lxdcluster",
            "local",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{spec}}}"#),
        ])
    }

    /// `kubectl delete lxdc --all` in `namespace`, waiting at most `timeout` for them to go.
    pub fn delete_containers(&self, namespace: &str, timeout: Duration) -> String {
        self.kubectl_ok(&[
            "delete",
            "lxdc",
            "--all",
            "-n",
            namespace,
            &format!("--timeout={}s", timeout.as_secs()),
        ])
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("operator.log")).unwrap_or_default()
    }
}

impl Operator {
    /// For a failing test: each container of its namespaces that is not Running, with its
    /// status; the log's last lines; the whole log kept in target/test-logs.
    fn show_what_was_not_settled(&self) {
        let namespaces = self
            .namespaces
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default();
        for namespace in &namespaces {
            let listed = self.kubectl(&["get", "lxdc", "-n", namespace, "-o", "json"]);
            let list: Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
            for item in list["items"].as_array().into_iter().flatten() {
                if item["status"]["phase"] != "Running" {
                    eprintln!(
                        "not Running: {namespace}/{} {}",
                        item["metadata"]["name"], item["status"]
                    );
                }
            }
        }
        let log = self.log();
        let folder = crate::repo_root().join("target/test-logs");
        let kept = folder.join(format!(
            "operator-{}-{}.log",
            namespaces.first().map_or("no-namespace", String::as_str),
            self.pid()
        ));
        let _ = std::fs::create_dir_all(&folder);
        let _ = std::fs::write(&kept, &log);
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!(
            "operator log (whole: {}), last lines:\n{}",
            kept.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        if failing {
            self.show_what_was_not_settled();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if failing {
            let namespaces = self
                .namespaces
                .lock()
                .map(|n| n.clone())
                .unwrap_or_default();
            crate::remove_instances_of(&namespaces);
        }
    }
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
