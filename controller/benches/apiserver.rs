//! The embedded API server's speed, beside a baseline measured in the same run. The server runs
//! as users run it, `lxd-operator apiserver` in a process of its own, reached over HTTPS with its
//! token; the clients are this process.
//! - durable creates per second over HTTP, 1 client and 16 concurrent clients, against the same
//!   number of single-row SQLite inserts committed one by one (WAL, synchronous=FULL), and, for
//!   comparison only, the same inserts with the WAL file written in place as the server's is;
//!   the one client in `BENCH_ROUNDS` (default 7) rounds, each beside its own baselines and
//!   the time of a GET of `/version` on the same connection (the round trip no server work
//!   can remove: on a small VM it is most of a create's time);
//! - listing `BENCH_OBJECTS` (default 10,000) LxdContainers, as full objects and as a Table;
//! - the server process's resident memory with them stored;
//! - watch delivery: `BENCH_WATCHERS` (default 100) watch streams on LxdContainers, the time
//!   from a create's HTTP answer to each watcher receiving its event (p50, p99).
//!
//! `hack/bench apiserver [N]` (release, with targets), or `hack/bench apiserver --short`
//! (`BENCH_SHORT=1`: 300 objects and 20 watchers, figures only; CI runs it in the debug
//! profile).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use lxd_operator_crds::LxdContainer;
use serde_json::{Value, json};

fn container(name: &str) -> LxdContainer {
    serde_json::from_value(json!({
        "apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "resources": {"cpu": 1, "memory": "256Mi"},
                 "config": {"user.role": "web"}, "placement": {"strategy": "least-loaded"}},
    }))
    .expect("a valid container")
}

/// Single-row SQLite inserts committed one by one, per second, in a new database: the baseline.
/// With `wal_in_place`, its WAL file is first given its working size, as the server does with
/// its own (see `lxd_operator_apiserver::storage::sqlite::WAL_RESERVE_BYTES`): then a commit's
/// sync writes no inode, and SQLite is much faster on this machine. Shown beside the baseline so
/// that the two are not confused.
fn sqlite_baseline(count: usize, wal_in_place: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let connection = rusqlite::Connection::open(dir.path().join("baseline.db")).expect("sqlite");
    connection
        .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, value TEXT);")
        .expect("schema");
    if wal_in_place {
        connection
            .execute_batch("CREATE TABLE reserve (filler BLOB); INSERT INTO reserve VALUES (zeroblob(4300000)); DELETE FROM reserve; PRAGMA wal_checkpoint(PASSIVE);")
            .expect("WAL reserve");
    }
    let value = serde_json::to_string(&container("baseline")).expect("json");
    let started = Instant::now();
    for _ in 0..count {
        connection
            .execute("INSERT INTO t (value) VALUES (?1)", [&value])
            .expect("insert");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// One round of the one-client measurement: each figure per second.
struct OneClientRound {
    baseline: f64,
    baseline_in_place: f64,
    raw: f64,
    kube: f64,
    /// A GET of `/version` on the same connection: the round trip alone, in µs.
    round_trip: f64,
}

/// The resident memory of process `pid`, in MiB.
fn resident_memory_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The server as users run it (`lxd-operator apiserver`, its own process), stopped on drop.
struct ServerProcess {
    child: std::process::Child,
    url: String,
}

impl ServerProcess {
    fn start(data_dir: &std::path::Path) -> ServerProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lxd-operator"))
            .args(["apiserver", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("lxd-operator apiserver");
        let stdout = child.stdout.take().expect("stdout");
        let (first_line, first) = std::sync::mpsc::channel();
        // Read on until the server ends: it must never find its stdout closed.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = first_line.send(line);
            }
        });
        let first = first.recv().expect("the server's first line");
        let url = first
            .strip_prefix("API server listening on ")
            .expect("the server's address")
            .to_owned();
        ServerProcess { child, url }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client trusting the server's CA, with a connection of its own.
fn http_client(roots: &rustls::RootCertStore) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("tls")
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        )
        .build()
        .expect("http")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let short = std::env::var("BENCH_SHORT").is_ok_and(|v| v == "1")
        || std::env::args().any(|a| a == "--short");
    let objects = env_number("BENCH_OBJECTS").unwrap_or(if short { 300 } else { 10_000 });
    let watchers = env_number("BENCH_WATCHERS").unwrap_or(if short { 20 } else { 100 });
    let watched_writes = if short { 50 } else { 200 };
    let target = |text: &'static str| if short { "" } else { text };
    // The clients' side, on one thread of its own: a second worker thread would take the
    // server's CPU time on this 2-core machine and add its own thread wake-ups to every
    // round trip, which is the client's cost, not the server's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        // As users reach it: HTTPS with the server's CA and token, from the kubeconfig.
        let server = ServerProcess::start(dir.path());
        let kubeconfig = kube::config::Kubeconfig::read_from(dir.path().join("kubeconfig")).expect("kubeconfig");
        let url = server.url.clone();
        let token = std::fs::read_to_string(dir.path().join("token")).expect("token");
        let bearer = format!("Bearer {}", token.trim());
        let mut roots = rustls::RootCertStore::empty();
        {
            use rustls_pki_types::pem::PemObject;
            let ca = std::fs::read(dir.path().join("pki/ca.crt")).expect("ca");
            roots.add(rustls_pki_types::CertificateDer::from_pem_slice(&ca).expect("ca pem")).expect("root");
        }
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
        let client = kube::Client::try_from(config).expect("client");
        let api: Api<LxdContainer> = Api::namespaced(client, "default");
        let collection = format!("{url}/apis/lxd-operator.dev/v1alpha1/namespaces/default/lxdcontainers");

        // One client, in rounds that alternate with the baselines, so that the machine's
        // slower and faster moments fall on both sides of each ratio: the baseline inserts,
        // then as many creates by a plain HTTP client sending ready JSON (the server's own
        // rate, as the target means it), then as many through kube-rs (which adds its typed
        // encoding and decoding). Each round's ratio is its own; the median is the figure.
        let rounds = env_number("BENCH_ROUNDS").unwrap_or(if short { 1 } else { 7 });
        let per_round = (objects / (3 * rounds)).clamp(1, 300);
        let http = http_client(&roots);
        let version = format!("{url}/version");
        let mut one_client = Vec::new();
        for round in 0..rounds {
            let baseline = sqlite_baseline(per_round, false);
            let baseline_in_place = sqlite_baseline(per_round, true);
            let bodies: Vec<String> = (0..per_round)
                .map(|i| serde_json::to_string(&container(&format!("raw-{round:02}-{i:05}"))).expect("json"))
                .collect();
            let started = Instant::now();
            for body in bodies {
                let response = http
                    .post(&collection)
                    .header("Authorization", &bearer)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("create");
                assert_eq!(response.status().as_u16(), 201);
                response.bytes().await.expect("answer");
            }
            let raw = per_round as f64 / started.elapsed().as_secs_f64();
            let started = Instant::now();
            for i in 0..per_round {
                api.create(&PostParams::default(), &container(&format!("seq-{round:02}-{i:05}"))).await.expect("create");
            }
            let kube = per_round as f64 / started.elapsed().as_secs_f64();
            let started = Instant::now();
            for _ in 0..per_round {
                let response = http.get(&version).header("Authorization", &bearer).send().await.expect("version");
                assert!(response.status().is_success());
                response.bytes().await.expect("answer");
            }
            let round_trip = started.elapsed().as_secs_f64() * 1e6 / per_round as f64;
            one_client.push(OneClientRound { baseline, baseline_in_place, raw, kube, round_trip });
        }
        let sequential = 2 * per_round * rounds;

        let concurrent = objects.saturating_sub(sequential);
        let started = Instant::now();
        futures::stream::iter(0..concurrent)
            .for_each_concurrent(16, |i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &container(&format!("par-{i:05}"))).await.expect("create");
                }
            })
            .await;
        let sixteen_clients = concurrent as f64 / started.elapsed().as_secs_f64().max(1e-9);

        let time_list = |table: bool| {
            let http = http_client(&roots);
            let collection = collection.clone();
            let bearer = bearer.clone();
            async move {
                let accept = if table { "application/json;as=Table;v=v1;g=meta.k8s.io,application/json" } else { "application/json" };
                let mut best = Duration::MAX;
                for _ in 0..5 {
                    let started = Instant::now();
                    let body = http
                        .get(&collection)
                        .header("Accept", accept)
                        .header("Authorization", &bearer)
                        .send()
                        .await
                        .expect("list")
                        .bytes()
                        .await
                        .expect("body");
                    best = best.min(started.elapsed());
                    assert!(body.len() > 1000);
                }
                best
            }
        };
        let full = time_list(false).await;
        let table = time_list(true).await;
        let listed = api.list(&ListParams::default()).await.expect("list");
        assert_eq!(listed.items.len(), objects);
        let revision = listed.metadata.resource_version.clone().expect("list revision");
        drop(listed);
        let memory = resident_memory_mib(server.child.id());

        // Watch delivery: every watcher on its own connection, resuming after the list.
        let mut streams = Vec::new();
        for _ in 0..watchers {
            let response = http_client(&roots)
                .get(format!("{collection}?watch=true&resourceVersion={revision}"))
                .header("Authorization", &bearer)
                .send()
                .await
                .expect("watch");
            assert!(response.status().is_success());
            streams.push(tokio::spawn(async move {
                let mut response = response;
                let mut buffer = Vec::new();
                let mut lines: Vec<(Instant, Vec<u8>)> = Vec::new();
                while lines.len() < watched_writes {
                    let chunk = response.chunk().await.expect("watch chunk").expect("watch ended early");
                    let received = Instant::now();
                    buffer.extend_from_slice(&chunk);
                    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        lines.push((received, line));
                    }
                }
                lines
            }));
        }
        let mut answered = Vec::with_capacity(watched_writes);
        for i in 0..watched_writes {
            api.create(&PostParams::default(), &container(&format!("watch-{i:05}"))).await.expect("create");
            answered.push(Instant::now());
        }
        let mut delays = Vec::with_capacity(watchers * watched_writes);
        for stream in streams {
            for (received, line) in stream.await.expect("watcher") {
                let event: Value = serde_json::from_slice(&line).expect("watch event");
                let name = event["object"]["metadata"]["name"].as_str().expect("event name");
                let index: usize = name.strip_prefix("watch-").and_then(|n| n.parse().ok()).expect("a watched object");
                delays.push(received.saturating_duration_since(answered[index]));
            }
        }
        delays.sort();

        println!("embedded API server, {objects} LxdContainers{}", if short { " (short run: figures only)" } else { "" });
        let median = |figure: fn(&OneClientRound) -> f64| {
            let mut figures: Vec<f64> = one_client.iter().map(figure).collect();
            figures.sort_by(f64::total_cmp);
            (figures[figures.len() / 2], figures[0], figures[figures.len() - 1])
        };
        let spread = |(median, low, high): (f64, f64, f64), unit: &str, digits: usize| {
            if rounds == 1 { format!("{median:>8.digits$}{unit}") } else { format!("{median:>8.digits$}{unit} (rounds {low:.digits$} to {high:.digits$})") }
        };
        println!("  one client, {rounds} round{} of {per_round} alternating with the baselines{}:", if rounds == 1 { "" } else { "s" }, if rounds == 1 { "" } else { "; medians" });
        println!("  baseline: single-row SQLite inserts committed one by one   {}", spread(median(|r| r.baseline), " /s", 0));
        println!("  creates over HTTP, 1 client                                {}", spread(median(|r| r.raw), " /s", 0));
        println!("    of the baseline, each round's ratio                      {} {}", spread(median(|r| r.raw / r.baseline), "", 2), target("(target >= 0.5)"));
        println!("  the same through kube-rs (typed client)                    {}", spread(median(|r| r.kube), " /s", 0));
        println!("    of the baseline                                          {}", spread(median(|r| r.kube / r.baseline), "", 2));
        println!("  for comparison: the same inserts, WAL written in place    {}", spread(median(|r| r.baseline_in_place), " /s", 0));
        println!("    1 client's creates, of it                                {}", spread(median(|r| r.raw / r.baseline_in_place), "", 2));
        println!("  for comparison: GET /version on the same connection     {}", spread(median(|r| r.round_trip), " µs", 0));
        println!("    a create over HTTP, 1 client                             {}", spread(median(|r| 1e6 / r.raw), " µs", 0));
        println!("    a baseline insert                                        {}", spread(median(|r| 1e6 / r.baseline), " µs", 0));
        println!("  creates over HTTP, 16 concurrent clients                   {sixteen_clients:>8.0} /s  {}", target("(target >= 3000)"));
        println!("  list of {objects}, full objects                            {:>8.1} ms {}", full.as_secs_f64() * 1000.0, target("(target < 100)"));
        println!("  list of {objects}, as a Table                              {:>8.1} ms {}", table.as_secs_f64() * 1000.0, target("(target < 100)"));
        println!("  resident memory of the server with them stored             {memory:>8.1} MiB");
        println!("  watch delivery to {watchers} watchers, {watched_writes} creates one after another:");
        println!("    from the create's answer to each watcher, p50            {:>8.2} ms", percentile(&delays, 0.5));
        println!("    p99                                                      {:>8.2} ms {}", percentile(&delays, 0.99), target("(target < 10)"));
        println!("    max                                                      {:>8.2} ms", percentile(&delays, 1.0));
    });
}
