//! The embedded Kubernetes-compatible API server of standalone mode: our custom resources (and
//! any CRD applied later), Namespaces, Secrets, ConfigMaps, Events and Leases, stored in SQLite,
//! served so that kubectl and kube-rs work unchanged. The model is k3s with kine: the
//! Kubernetes API over an embedded SQL database.
//!
//! - [`storage`]: objects and their change log (the resourceVersions) in SQLite.
//! - [`registry`]: the served kinds; [`objects`]: what each write means.
//! - [`router`]: the HTTP layer; [`discovery`], [`openapi`], [`table`], [`watch`].
//! - [`validation`]: CRD schema validation; [`selectors`], [`patch`], [`events`], [`status`].

pub mod discovery;
pub mod events;
pub mod managed_fields;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod registry;
pub mod router;
pub mod selectors;
pub mod status;
pub mod storage;
pub mod structural;
pub mod table;
pub mod validation;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::json;

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
    /// Listening failed.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the state in `data_dir` (keeping `history` changes for watches): the store, every
/// stored CRD served again, the namespaces `default` and `kube-system`, and our own CRDs when
/// missing.
pub fn open(data_dir: &Path, history: i64) -> Result<ApiState, ServerError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let store = storage::Store::open_with_history(&data_dir.join("state.db"), history)?;
    let state = ApiState {
        store,
        registry: registry::Registry::default(),
    };
    let crds = state
        .registry
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(|| ServerError::Bootstrap("no CRD resource".to_owned()))?;
    let (stored, _) = state.store.list(&crds.prefix(None))?;
    for object in stored {
        if let Ok(crd) = serde_json::from_value::<CustomResourceDefinition>(object) {
            state
                .registry
                .install_crd(&crd)
                .map_err(ServerError::Bootstrap)?;
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

/// Writes `data_dir/kubeconfig` for a server at `address`, and returns its path.
pub fn write_kubeconfig(data_dir: &Path, address: SocketAddr) -> Result<PathBuf, ServerError> {
    let path = data_dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lxd-operator\n  cluster:\n    server: http://{address}\ncontexts:\n- name: lxd-operator\n  context:\n    cluster: lxd-operator\n    user: lxd-operator\n    namespace: default\ncurrent-context: lxd-operator\nusers:\n- name: lxd-operator\n  user: {{}}\n"
    );
    std::fs::write(&path, text).map_err(|source| ServerError::DataDir {
        path: path.clone(),
        source,
    })?;
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
}

impl Server {
    /// Opens `data_dir`, binds `listen` (port 0 picks a free one) and writes the kubeconfig.
    pub async fn bind(
        data_dir: &Path,
        listen: SocketAddr,
        history: i64,
    ) -> Result<Server, ServerError> {
        let state = open(data_dir, history)?;
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
        let kubeconfig = write_kubeconfig(data_dir, address)?;
        Ok(Server {
            state,
            listener,
            address,
            kubeconfig,
        })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let address = self.address;
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServerError::Listen { address, source })
    }
}
