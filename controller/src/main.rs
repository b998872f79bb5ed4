//! The `lxd-operator` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use lxd_operator::lxd::{ClientIdentity, ServerTrust, trust};
use lxd_operator::reconcile::secrets::SecretScope;
use lxd_operator::telemetry::{Metrics, http};

/// Runs LXD containers declaratively, on a Kubernetes cluster or standalone.
#[derive(Debug, Parser)]
#[command(name = "lxd-operator", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: lxd_operator::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of every kind as YAML.
    Crds,
    /// Run the controller against the Kubernetes API in KUBECONFIG (or in-cluster config).
    Run(RunArgs),
    /// Serve the embedded Kubernetes-compatible API (our kinds, stored in SQLite) for kubectl.
    Apiserver(ApiserverArgs),
    /// The embedded API server and the controller in one process: the way to run on one
    /// machine. Prints where the kubeconfig is.
    Standalone(StandaloneArgs),
    /// Serve only the validating admission webhook, against the API in KUBECONFIG (or
    /// in-cluster config); `run --admission-webhook-listen` serves it beside the controller.
    AdmissionWebhook(AdmissionWebhookArgs),
    /// Talk to an LXD cluster directly.
    #[command(subcommand)]
    Lxd(LxdCommand),
}

#[derive(Debug, Args)]
struct ApiserverArgs {
    /// Folder holding all state (the SQLite store), the server's CA and token, and the
    /// kubeconfig written for kubectl (mode 0600: it holds the token).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on. HTTPS with the server's own CA and a bearer token; another
    /// address than loopback exposes the API to other machines.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Serve plain HTTP instead of HTTPS (the token is still required). For development,
    /// and allowed on loopback only.
    #[arg(long)]
    insecure_http: bool,
    /// Changes kept for watches that resume from an older resourceVersion; older ones get
    /// `410 Expired` and relist. Small values are for tests of that path.
    #[arg(long, default_value_t = lxd_operator_apiserver::storage::DEFAULT_HISTORY, hide = true)]
    watch_history: i64,
    /// Seconds a new connection has for its TLS handshake and its first request's head, and
    /// each later request for its head. An HTTP/1 keep-alive connection that sends no request
    /// for this long is closed (clients open a new one).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_head_timeout_seconds: u64,
    /// Connections open at once; more are closed as they arrive.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Watches open at once; more are answered 429 TooManyRequests (clients retry).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_watches: u32,
}

impl ApiserverArgs {
    fn limits(&self) -> lxd_operator_apiserver::Limits {
        lxd_operator_apiserver::Limits {
            request_head_timeout: std::time::Duration::from_secs(self.request_head_timeout_seconds),
            max_connections: self.max_connections as usize,
            max_watches: self.max_watches as usize,
        }
    }
}

#[derive(Debug, Args)]
struct StandaloneArgs {
    #[command(flatten)]
    server: ApiserverArgs,
    /// Where to serve the controller's /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    metrics_addr: std::net::SocketAddr,
    /// /healthz fails after this many seconds without progress (no reconcile finished while
    /// there are containers, or no sign of life from a cluster's event stream).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..))]
    stall_seconds: u64,
    /// The namespace whose Secrets LxdClusters may refer to (client certificates, trust
    /// tokens), or `*` for every namespace. A reference elsewhere is refused, naming the field.
    #[arg(long, default_value = "default")]
    secrets_namespace: SecretScope,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    metrics_addr: std::net::SocketAddr,
    /// /healthz fails after this many seconds without progress (no reconcile finished while
    /// there are containers, or no sign of life from a cluster's event stream).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..))]
    stall_seconds: u64,
    /// The namespace whose Secrets LxdClusters may refer to (client certificates, trust
    /// tokens), or `*` for every namespace: the operator's own namespace unless widened, so
    /// that who may write an LxdCluster cannot have the operator read a Secret elsewhere.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    secrets_namespace: SecretScope,
    /// Reconcile only while holding a Lease, so that one of several replicas is active.
    #[arg(long)]
    leader_election: bool,
    /// Watch Pods and Nodes, for LxdClusters whose `kubernetesNodes` map members to the
    /// Kubernetes Nodes on the same hosts (needs RBAC to read Pods and Nodes and patch Nodes).
    #[arg(long)]
    kubernetes_nodes: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "lxd-operator")]
    lease_name: String,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    lease_identity: Option<String>,
    /// How long the Lease holds without renewal: the longest handover when a leader dies.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// How long the leader keeps acting when renewals fail: it stops at once after this
    /// (below the lease duration, so before a standby may take over).
    #[arg(long, default_value_t = 10)]
    lease_renew_deadline_seconds: u64,
    /// How often the leader renews the Lease (and a standby looks at it).
    #[arg(long, default_value_t = 2)]
    lease_renew_seconds: u64,
    /// Also serve the validating admission webhook (HTTPS) on this address, on every replica
    /// (standbys too): Kubernetes calls it on writes of LxdContainers and LxdContainerSets.
    #[arg(long, requires_all = ["admission_webhook_cert", "admission_webhook_key"])]
    admission_webhook_listen: Option<std::net::SocketAddr>,
    /// The webhook's serving certificate (PEM, its chain after it), e.g. a mounted Secret's
    /// tls.crt.
    #[arg(long, requires = "admission_webhook_listen")]
    admission_webhook_cert: Option<PathBuf>,
    /// The webhook's private key (PEM).
    #[arg(long, requires = "admission_webhook_listen")]
    admission_webhook_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct AdmissionWebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:9443")]
    listen: std::net::SocketAddr,
    /// The serving certificate (PEM, its chain after it).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
}

impl RunArgs {
    fn lease(&self) -> Option<lxd_operator::leader::LeaseConfig> {
        self.leader_election
            .then(|| lxd_operator::leader::LeaseConfig {
                name: self.lease_name.clone(),
                namespace: self.lease_namespace.clone(),
                identity: self
                    .lease_identity
                    .clone()
                    .unwrap_or_else(|| format!("lxd-operator-{}", std::process::id())),
                duration: std::time::Duration::from_secs(self.lease_duration_seconds),
                renew_deadline: std::time::Duration::from_secs(self.lease_renew_deadline_seconds),
                renew_interval: std::time::Duration::from_secs(self.lease_renew_seconds),
            })
    }
}

#[derive(Debug, Subcommand)]
enum LxdCommand {
    /// Have LXD trust a client certificate, with a trust token from `lxc config trust add`.
    Trust(TrustArgs),
}

#[derive(Debug, Args)]
struct TrustArgs {
    /// The member to redeem the token at, `https://host:port`. The token names the member that
    /// issued it, and only that member accepts it: this must be one of its addresses.
    #[arg(long)]
    endpoint: Option<String>,
    /// The trust token (base64), as `lxc config trust add` prints it.
    #[arg(long, env = "LXD_TRUST_TOKEN", hide_env_values = true)]
    token: String,
    /// The client certificate to have trusted (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lxd_operator::telemetry::init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run_controller(&args),
        Command::Apiserver(args) => run_apiserver(&args),
        Command::Standalone(args) => run_standalone(&args),
        Command::AdmissionWebhook(args) => run_admission_webhook(&args),
        Command::Crds => print_crds(),
        Command::Lxd(LxdCommand::Trust(args)) => trust_certificate(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lxd-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds() -> anyhow::Result<()> {
    let yaml = lxd_operator_crds::generate::crd_yaml()?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(())
}

fn trust_certificate(args: &TrustArgs) -> anyhow::Result<()> {
    let token = trust::TrustToken::decode(&args.token)?;
    if let Some(endpoint) = &args.endpoint {
        let wanted = lxd_operator::lxd::Endpoint::parse(endpoint)?;
        anyhow::ensure!(
            token.endpoints()?.contains(&wanted),
            "the token was issued by the member at {:?}; LXD accepts it only there (and burns it when redeemed elsewhere), not at {endpoint}",
            token.addresses
        );
    }
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let identity = ClientIdentity::from_pem(&read(&args.cert)?, &read(&args.key)?)?;
    let fingerprint = identity.fingerprint();
    let trust = ServerTrust::from_fingerprint(&token.fingerprint)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(trust::redeem(&token, identity, Some(trust)))?;
    match outcome {
        trust::TrustOutcome::Trusted => println!(
            "certificate {fingerprint} is now trusted by {}",
            token.addresses.join(", ")
        ),
        trust::TrustOutcome::AlreadyTrusted => {
            println!("certificate {fingerprint} was already trusted; the token was not used")
        }
    }
    Ok(())
}

fn run_controller(args: &RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach the Kubernetes API (KUBECONFIG or in-cluster)")?;
        let (metrics, readiness) = serve_telemetry(args.metrics_addr, args.stall_seconds).await?;
        if let (Some(listen), Some(cert), Some(key)) = (
            args.admission_webhook_listen,
            &args.admission_webhook_cert,
            &args.admission_webhook_key,
        ) {
            let webhook = bind_admission_webhook(listen, cert, key).await?;
            tokio::spawn(webhook.serve(client.clone(), std::future::pending()));
        }
        let Some(lease) = args.lease() else {
            reconcile_as_sole_replica(
                client,
                metrics,
                readiness,
                &args.secrets_namespace,
                args.kubernetes_nodes,
            )
            .await;
            return Ok(());
        };
        lease.validate()?;
        // A standby is healthy and ready: it is waiting for its turn.
        readiness.set_synced(true);
        let mut lease = tokio::select! {
            lease = lease.acquire(client.clone()) => lease,
            () = shutdown_signal() => return Ok(()),
        };
        metrics.leader.set(1);
        readiness.set_synced(false);
        let leadership = lease.leadership();
        tokio::select! {
            () = lxd_operator::reconcile::run(client, metrics.clone(), readiness, leadership, args.secrets_namespace.clone(), args.kubernetes_nodes) => {
                lease.release().await;
                Ok(())
            }
            () = lease.hold() => {
                metrics.leader.set(0);
                anyhow::bail!("leadership lost; exiting so that this replica restarts as a standby")
            }
        }
    });
    // A replica that lost its lease must go now, whatever its tasks wait for: dropping the
    // runtime would wait for every blocking task, and one stuck on an API that hangs kept a
    // deposed leader alive past its lease (seen once in CI).
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    outcome
}

/// How long the runtime's remaining tasks get when the controller ends.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn bind_apiserver(args: &ApiserverArgs) -> anyhow::Result<lxd_operator_apiserver::Server> {
    use lxd_operator_apiserver::{Server, Transport};
    let transport = if args.insecure_http {
        Transport::InsecureHttp
    } else {
        Transport::Https
    };
    let server = Server::bind(
        &args.data_dir,
        args.listen,
        args.watch_history,
        transport,
        args.limits(),
    )
    .await?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the API server is reachable from other machines (HTTPS, token required)");
    }
    println!("API server listening on {}", server.url());
    println!(
        "kubeconfig: {}   (export KUBECONFIG={})",
        server.kubeconfig.display(),
        server.kubeconfig.display()
    );
    Ok(server)
}

fn run_apiserver(args: &ApiserverArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = bind_apiserver(args).await?;
        server.serve(shutdown_signal()).await?;
        Ok(())
    })
}

fn run_admission_webhook(args: &AdmissionWebhookArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach the Kubernetes API (KUBECONFIG or in-cluster)")?;
        let webhook = bind_admission_webhook(args.listen, &args.cert, &args.key).await?;
        webhook.serve(client, shutdown_signal()).await;
        Ok(())
    })
}

/// Binds the admission webhook, and says where.
async fn bind_admission_webhook(
    listen: std::net::SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<lxd_operator::admission_webhook::AdmissionWebhook> {
    let webhook =
        lxd_operator::admission_webhook::AdmissionWebhook::bind(listen, cert, key).await?;
    println!(
        "admission webhook listening on https://{}{}",
        webhook.address,
        lxd_operator::admission_webhook::PATH
    );
    Ok(webhook)
}

fn run_standalone(args: &StandaloneArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = bind_apiserver(&args.server).await?;
        // The controller talks to the embedded server through kube, as it would to a cluster,
        // with the kubeconfig a user gets.
        let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async move {
            let _ = server_stopped.await;
        }));
        let (metrics, readiness) = serve_telemetry(args.metrics_addr, args.stall_seconds).await?;
        // Returns on SIGTERM/SIGINT once reconciles in flight have finished; then the server stops.
        // The embedded server stores Pods and Nodes: watching them costs little, and a cluster
        // that maps members to Nodes works as it does beside a real Kubernetes.
        reconcile_as_sole_replica(client, metrics, readiness, &args.secrets_namespace, true).await;
        let _ = stop_server.send(());
        serving.await??;
        Ok(())
    })
}

/// Serves /metrics, /healthz and /readyz on `address` in the background, and says where;
/// /healthz fails once reconciles stall for `stall_seconds`.
async fn serve_telemetry(
    address: std::net::SocketAddr,
    stall_seconds: u64,
) -> anyhow::Result<(Arc<Metrics>, Arc<http::Readiness>)> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(http::Readiness::with_stall_after(
        std::time::Duration::from_secs(stall_seconds),
    ));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for metrics"))?;
    if let Ok(bound) = listener.local_addr() {
        println!("metrics and health on http://{bound}");
    }
    tokio::spawn(http::serve(listener, metrics.clone(), readiness.clone()));
    Ok((metrics, readiness))
}

/// Reconciles with no leader election: this replica is the only one and always leads.
async fn reconcile_as_sole_replica(
    client: kube::Client,
    metrics: Arc<Metrics>,
    readiness: Arc<http::Readiness>,
    secret_scope: &SecretScope,
    kubernetes_nodes: bool,
) {
    metrics.leader.set(1);
    lxd_operator::reconcile::run(
        client,
        metrics,
        readiness,
        lxd_operator::leader::Leadership::unconditional(),
        secret_scope.clone(),
        kubernetes_nodes,
    )
    .await;
}
