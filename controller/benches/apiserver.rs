//! The embedded API server's speed, beside a baseline measured in the same run:
//! - durable creates per second over HTTP, 1 client and 16 concurrent clients, against the same
//!   number of single-row SQLite inserts committed one by one (WAL, synchronous=FULL);
//! - listing `BENCH_OBJECTS` (default 10,000) LxdContainers, as full objects and as a Table;
//! - the process's resident memory with them stored.
//!
//! `hack/bench apiserver [N]`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use lxd_operator::apiserver::{Server, Transport};
use lxd_operator_crds::LxdContainer;
use serde_json::json;

fn container(name: &str) -> LxdContainer {
    serde_json::from_value(json!({
        "apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "resources": {"cpu": 1, "memory": "256Mi"},
                 "config": {"user.role": "web"}, "placement": {"strategy": "least-loaded"}},
    }))
    .expect("a valid container")
}

fn sqlite_baseline(count: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let connection = rusqlite::Connection::open(dir.path().join("baseline.db")).expect("sqlite");
    connection
        .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, value TEXT);")
        .expect("schema");
    let value = serde_json::to_string(&container("baseline")).expect("json");
    let started = Instant::now();
    for _ in 0..count {
        connection
            .execute("INSERT INTO t (value) VALUES (?1)", [&value])
            .expect("insert");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn resident_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let objects: usize = std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        // As users reach it: HTTPS with the server's CA and token, from the kubeconfig.
        let server = Server::bind(dir.path(), "127.0.0.1:0".parse().expect("address"), 20_000, Transport::Https)
            .await
            .expect("server");
        let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
        let url = server.url();
        let token = std::fs::read_to_string(dir.path().join("token")).expect("token");
        let mut roots = rustls::RootCertStore::empty();
        {
            use rustls_pki_types::pem::PemObject;
            let ca = std::fs::read(dir.path().join("pki/ca.crt")).expect("ca");
            roots.add(rustls_pki_types::CertificateDer::from_pem_slice(&ca).expect("ca pem")).expect("root");
        }
        tokio::spawn(server.serve(std::future::pending()));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
        let client = kube::Client::try_from(config).expect("client");
        let api: Api<LxdContainer> = Api::namespaced(client, "default");

        let sequential = objects.min(1000);
        let baseline = sqlite_baseline(sequential);
        let started = Instant::now();
        for i in 0..sequential {
            api.create(&PostParams::default(), &container(&format!("seq-{i:05}"))).await.expect("create");
        }
        let one_client = sequential as f64 / started.elapsed().as_secs_f64();

        let concurrent = objects - sequential;
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
            let url = url.clone();
            let roots = roots.clone();
            let bearer = format!("Bearer {}", token.trim());
            async move {
                let http = reqwest::Client::builder()
                    .tls_backend_preconfigured(
                        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                            .with_safe_default_protocol_versions()
                            .expect("tls")
                            .with_root_certificates(roots)
                            .with_no_client_auth(),
                    )
                    .build()
                    .expect("http");
                let accept = if table { "application/json;as=Table;v=v1;g=meta.k8s.io,application/json" } else { "application/json" };
                let mut best = Duration::MAX;
                for _ in 0..5 {
                    let started = Instant::now();
                    let body = http
                        .get(format!("{url}/apis/lxd-operator.dev/v1alpha1/namespaces/default/lxdcontainers"))
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
        let listed = api.list(&ListParams::default()).await.expect("list").items.len();
        assert_eq!(listed, objects);

        println!("embedded API server, {objects} LxdContainers");
        println!("  baseline: single-row SQLite inserts committed one by one   {baseline:>8.0} /s");
        println!("  creates over HTTP, 1 client                                {one_client:>8.0} /s  ({:.2} of the baseline; target >= 0.5)", one_client / baseline);
        println!("  creates over HTTP, 16 concurrent clients                   {sixteen_clients:>8.0} /s  (target >= 3000)");
        println!("  list of {objects}, full objects                            {:>8.1} ms (target < 100)", full.as_secs_f64() * 1000.0);
        println!("  list of {objects}, as a Table                              {:>8.1} ms (target < 100)", table.as_secs_f64() * 1000.0);
        println!("  resident memory of server and client with them stored    {:>8.1} MiB", resident_memory_mib());
    });
}
