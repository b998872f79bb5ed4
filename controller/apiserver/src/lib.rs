//! The embedded Kubernetes-compatible API server of standalone mode: our custom resources (and
//! any CRD applied later), Namespaces, Secrets, ConfigMaps, Events, Leases, Pods and Nodes (and
//! the other kinds of kubectl's default prune list, as plain stored objects), stored in SQLite,
//! served so that kubectl and kube-rs work unchanged. The model is k3s with kine: the
//! Kubernetes API over an embedded SQL database. A crate of its own: it depends only on the API
//! types (`lxd-operator-crds`), and the controller's binary serves it.
//!
//! - [`storage`]: objects and their change log (the resourceVersions) in SQLite.
//! - [`registry`]: the served kinds, and what each does beyond being stored.
//! - [`objects`]: what each write means, one file per verb family; [`listing`]: reads, paging.
//! - [`router`](mod@router): the HTTP layer; [`discovery`], [`table`], [`watch`].
//! - [`schema`]: CRD schema validation and name rules, pruning and defaults, OpenAPI;
//!   [`managed_fields`]: field ownership and server-side apply.
//! - [`connections`]: the accept loop (also the operator's admission webhook's), timeouts and
//!   caps of what clients may hold.
//! - [`security`]: TLS and the bearer token; [`selectors`], [`patch`], [`events`], [`status`].

#![forbid(unsafe_code)]

pub mod connections;
pub mod discovery;
pub mod events;
pub mod listing;
pub mod managed_fields;
pub mod objects;
mod panics;
pub mod patch;
pub mod registry;
pub mod router;
pub mod schema;
pub mod security;
pub mod selectors;
pub mod status;
pub mod storage;
pub mod table;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::json;

pub use connections::Limits;
pub use objects::ApiState;
pub use router::router;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data folder cannot be used.
    #[error("data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store cannot be opened.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// Bootstrapping the built-in objects failed.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    /// A stored CustomResourceDefinition cannot be served again.
    #[error("bootstrap: {0}")]
    Crd(#[source] registry::CrdError),
    /// Plain HTTP asked for on an address other machines reach.
    #[error(
        "--listen {address}: plain HTTP serves the token in clear text, so it is allowed on loopback only; drop --insecure-http to serve HTTPS"
    )]
    Insecure { address: SocketAddr },
    /// The CA, certificate or token.
    #[error(transparent)]
    Security(#[from] security::SecurityError),
    /// Listening failed.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Deletes Events older than [`events::EVENT_TTL`], once a minute.
async fn expire_events_every_minute(state: ApiState) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let state = state.clone();
        let expired = tokio::task::spawn_blocking(move || {
            events::expire(&state, jiff::Timestamp::now(), events::EVENT_TTL)
        })
        .await;
        match expired {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => tracing::debug!(count, "expired Events deleted"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot delete expired Events"),
            Err(error) => tracing::warn!(%error, "expiring Events failed"),
        }
    }
}

/// Whether `data_dir` is ours to make private: empty, or holding our store.
fn holds_only_ours(data_dir: &Path) -> std::io::Result<bool> {
    Ok(data_dir.join("state.db").exists() || std::fs::read_dir(data_dir)?.next().is_none())
}

/// Opens the state in `data_dir` (keeping `history` changes for watches): the store, every
/// stored CRD served again, the namespaces `default` and `kube-system`, and our own CRDs when
/// missing.
pub fn open(data_dir: &Path, history: i64) -> Result<ApiState, ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let data_dir_error = |source| ServerError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    // The store holds Secrets (LXD client keys): for the server's user only. A folder that
    // holds others' files (think `--data-dir /tmp`) keeps its mode: taking it over would break
    // them, and every file of ours is private by its own mode.
    let created = !data_dir.exists();
    std::fs::create_dir_all(data_dir).map_err(data_dir_error)?;
    if created || holds_only_ours(data_dir).map_err(data_dir_error)? {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(data_dir_error)?;
    } else {
        tracing::warn!(data_dir = %data_dir.display(), "the data folder holds other files: its mode is left as it is, lxd-operator's own files in it are private");
    }
    // Private from its first byte: SQLite gives the -wal and -shm files the database's mode.
    security::create_private(&data_dir.join("state.db"))?;
    let store = storage::Store::open_with_history(&data_dir.join("state.db"), history)?;
    let state = ApiState {
        store: Arc::new(store),
        registry: registry::Registry::default(),
        watch_slots: Arc::new(tokio::sync::Semaphore::new(Limits::default().max_watches)),
        admission: Arc::default(),
    };
    let crds = state
        .registry
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(|| ServerError::Bootstrap("no CRD resource".to_owned()))?;
    let (stored, _) = state.store.list(&crds.prefix(None))?;
    for object in stored {
        if let Ok(crd) = serde_json::from_value::<CustomResourceDefinition>(object) {
            state.registry.install_crd(&crd).map_err(ServerError::Crd)?;
        }
    }
    let bootstrap = objects::WriteOptions {
        field_manager: Some("lxd-operator-apiserver".to_owned()),
        ..Default::default()
    };
    let namespaces = state
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ServerError::Bootstrap("no namespaces".to_owned()))?;
    for name in ["default", "kube-system"] {
        if state.store.get(&namespaces.key(None, name))?.is_none() {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}});
            state
                .create(&namespaces, None, namespace, &bootstrap)
                .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        }
    }
    for crd in lxd_operator_crds::generate::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let object =
            serde_json::to_value(&crd).map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        match state.store.get(&crds.key(None, &name))? {
            None => {
                state
                    .create(&crds, None, object, &bootstrap)
                    .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
            }
            // A newer binary serves its own schema.
            Some(current) if current["spec"] != object["spec"] => {
                let mut updated = current.clone();
                updated["spec"] = object["spec"].clone();
                state
                    .update(&crds, None, &name, updated, false, &bootstrap)
                    .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
            }
            Some(_) => {}
        }
    }
    Ok(state)
}

/// How the server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS with the server's own CA (the default).
    Https,
    /// Plain HTTP: development only, on loopback only.
    InsecureHttp,
}

/// Writes `data_dir/kubeconfig` (mode 0600) for a server at `address`, and returns its path.
pub fn write_kubeconfig(
    data_dir: &Path,
    address: SocketAddr,
    transport: Transport,
    credentials: &security::Credentials,
) -> Result<PathBuf, ServerError> {
    use base64::Engine;
    let path = data_dir.join("kubeconfig");
    // A server on every address is reached on loopback from this machine.
    let host = if address.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
    } else {
        address
    };
    let cluster = match transport {
        Transport::Https => format!(
            "server: https://{host}\n    certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(&credentials.ca_pem)
        ),
        Transport::InsecureHttp => format!("server: http://{host}"),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lxd-operator\n  cluster:\n    {cluster}\ncontexts:\n- name: lxd-operator\n  context:\n    cluster: lxd-operator\n    user: lxd-operator\n    namespace: default\ncurrent-context: lxd-operator\nusers:\n- name: lxd-operator\n  user:\n    token: {}\n",
        credentials.token
    );
    security::write_private(&path, &text)?;
    Ok(path)
}

/// A bound listener and the state, ready to serve.
#[derive(Debug)]
pub struct Server {
    /// The state.
    pub state: ApiState,
    listener: tokio::net::TcpListener,
    /// The address it listens on.
    pub address: SocketAddr,
    /// The kubeconfig written for it.
    pub kubeconfig: PathBuf,
    /// HTTPS or plain HTTP.
    pub transport: Transport,
    credentials: security::Credentials,
    limits: Limits,
}

impl Server {
    /// Opens `data_dir`, binds `listen` (port 0 picks a free one) and writes the kubeconfig.
    /// Plain HTTP is refused on any address but loopback.
    pub async fn bind(
        data_dir: &Path,
        listen: SocketAddr,
        history: i64,
        transport: Transport,
        limits: Limits,
    ) -> Result<Server, ServerError> {
        if transport == Transport::InsecureHttp && !listen.ip().is_loopback() {
            return Err(ServerError::Insecure { address: listen });
        }
        let mut state = open(data_dir, history)?;
        state.watch_slots = Arc::new(tokio::sync::Semaphore::new(limits.max_watches));
        let credentials = security::Credentials::load_or_create(data_dir, listen.ip())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Listen {
                address: listen,
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                address: listen,
                source,
            })?;
        let kubeconfig = write_kubeconfig(data_dir, address, transport, &credentials)?;
        Ok(Server {
            state,
            listener,
            address,
            kubeconfig,
            transport,
            credentials,
            limits,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        let scheme = match self.transport {
            Transport::Https => "https",
            Transport::InsecureHttp => "http",
        };
        format!("{scheme}://{}", self.address)
    }

    /// Serves until `shutdown` completes; then open connections get a few seconds to finish.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let expiring = tokio::spawn(expire_events_every_minute(self.state.clone()));
        let app = router(self.state).layer(axum::middleware::from_fn_with_state(
            self.credentials.token.clone(),
            security::require_token,
        ));
        let acceptor = match self.transport {
            Transport::Https => Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
                self.credentials.tls_config()?,
            ))),
            Transport::InsecureHttp => None,
        };
        connections::serve(
            "API server",
            self.listener,
            app,
            acceptor,
            self.limits,
            shutdown,
        )
        .await;
        expiring.abort();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn events_older_than_the_ttl_are_deleted_and_newer_ones_kept() {
        let data = tempfile::tempdir().unwrap();
        let state = open(data.path(), 100).unwrap();
        let events = state.registry.find("", "v1", "events").unwrap();
        let now = jiff::Timestamp::now();
        let hours_ago = |h: i64| (now - jiff::SignedDuration::from_hours(h)).to_string();
        for (name, last) in [("old", hours_ago(2)), ("recent", hours_ago(0))] {
            let event = json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"kind": "LxdContainer", "name": "web", "namespace": "default"},
                "reason": "Test", "message": "m", "type": "Normal", "lastTimestamp": last});
            state
                .create(
                    &events,
                    Some("default"),
                    event,
                    &objects::WriteOptions::default(),
                )
                .unwrap();
        }
        assert_eq!(
            events::expire(&state, now, events::EVENT_TTL).map_err(|e| e.status()),
            Ok(1)
        );
        let (left, _) = state.store.list(&events.prefix(None)).unwrap();
        let names: Vec<&str> = left
            .iter()
            .filter_map(|e| e["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["recent"]);
    }

    #[test]
    fn a_new_data_folder_is_private() {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("data");
        open(&data, 100).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("state.db")), 0o600);
    }

    #[test]
    fn a_shared_folder_keeps_its_mode_and_our_files_in_it_are_private() {
        // As `--data-dir /tmp` would be: others' files in a folder open to all.
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::write(shared.path().join("someone-elses.sock"), "").unwrap();
        open(shared.path(), 100).unwrap();
        security::Credentials::load_or_create(shared.path(), "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            std::fs::metadata(shared.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o1777
        );
        for ours in ["state.db", "state.db-wal", "token", "pki/ca.key"] {
            let path = shared.path().join(ours);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{ours}");
            }
        }
        assert_eq!(mode(&shared.path().join("state.db")), 0o600);
        assert_eq!(mode(&shared.path().join("pki")), 0o700);
    }
}
