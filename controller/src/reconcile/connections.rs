//! One LXD client per LxdCluster, built from its spec and client Secret, with one event stream
//! per cluster whose events wake the reconcilers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use lxd_operator_crds::LxdCluster;
use lxd_operator_crds::cluster::{ProjectMode, ServerCertificatePin, ServerPhase};
use lxd_operator_crds::shared::SecretReference;

use super::secrets::SecretScope;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::leader::Leadership;
use crate::lxd::client::RequestObserver;
use crate::lxd::events::{EventStreamItem, LifecycleAction, LxdEvent};
use crate::lxd::{ClientConfig, ClientIdentity, Endpoint, LxdClient, LxdError, ServerTrust};

/// Why a cluster cannot be connected to as its spec says.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The spec is unusable (names the field and the rule).
    #[error("{field}: {rule}")]
    InvalidSpec { field: String, rule: String },
    /// The spec refers to a Secret in a namespace whose Secrets the operator does not read.
    #[error("{field}: {rule}")]
    SecretOutOfScope { field: String, rule: String },
    /// The client certificate Secret cannot be read.
    #[error("Secret {namespace}/{name}: {reason}")]
    Secret {
        namespace: String,
        name: String,
        reason: String,
    },
    /// Reading the Secret failed.
    #[error("reading the client Secret: {0}")]
    Kube(#[source] kube::Error),
    /// The LXD client could not be set up.
    #[error(transparent)]
    Lxd(#[from] LxdError),
    /// The cluster is still being formed from `spec.servers`: no member to reach yet.
    #[error("the cluster is being formed from spec.servers; no server is a member yet")]
    Forming,
}

/// What the event stream of a cluster reports to the controllers.
#[derive(Debug, Clone)]
pub struct ClusterSignal {
    /// The LxdCluster's name.
    pub cluster: String,
    /// What happened.
    pub item: EventStreamItem,
}

/// The client of one cluster.
#[derive(Debug)]
pub struct Connection {
    /// The LXD client.
    pub client: LxdClient,
    /// Identifies the spec and Secret the client was built from.
    key: String,
    events: tokio::task::AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.events.abort();
    }
}

/// Clients of every known cluster.
#[derive(Debug)]
pub struct Connections {
    by_cluster: Mutex<HashMap<String, Arc<Connection>>>,
    signals: mpsc::UnboundedSender<ClusterSignal>,
    observer: Arc<dyn RequestObserver>,
    leadership: Leadership,
    secret_scope: SecretScope,
}

impl Connections {
    /// An empty registry whose event streams report into `signals` and whose clients report
    /// their requests to `observer`.
    pub fn new(
        signals: mpsc::UnboundedSender<ClusterSignal>,
        observer: Arc<dyn RequestObserver>,
        leadership: Leadership,
        secret_scope: SecretScope,
    ) -> Self {
        Connections {
            by_cluster: Mutex::new(HashMap::new()),
            signals,
            observer,
            leadership,
            secret_scope,
        }
    }

    /// Whose Secrets LxdClusters may refer to.
    pub fn secret_scope(&self) -> &SecretScope {
        &self.secret_scope
    }

    /// The clusters with a client set up.
    pub fn clusters(&self) -> Vec<String> {
        self.by_cluster
            .lock()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The client of a cluster, if one was set up.
    pub fn get(&self, cluster: &str) -> Option<Arc<Connection>> {
        self.by_cluster.lock().ok()?.get(cluster).cloned()
    }

    /// Forgets a cluster (its event stream stops).
    pub fn remove(&self, cluster: &str) {
        if let Ok(mut map) = self.by_cluster.lock() {
            map.remove(cluster);
        }
    }

    /// The client for the cluster as its spec and Secret are now: the existing one when neither
    /// changed, else a new one (and a new event stream).
    pub async fn connect(
        &self,
        kube: &kube::Client,
        cluster: &LxdCluster,
    ) -> Result<Arc<Connection>, ConnectionError> {
        let name = cluster.name_any();
        let (mut config, secret_version) = client_config(kube, cluster, &self.secret_scope).await?;
        config.observer = Some(self.observer.clone());
        config.leadership = self.leadership.clone();
        let key = connection_key(cluster, &secret_version);
        if let Some(existing) = self.get(&name).filter(|c| c.key == key) {
            return Ok(existing);
        }
        let client = LxdClient::new(config)?;
        let events = spawn_event_forwarder(&client, &name, self.signals.clone());
        let connection = Arc::new(Connection {
            client,
            key,
            events,
        });
        if let Ok(mut map) = self.by_cluster.lock() {
            map.insert(name, connection.clone());
        }
        Ok(connection)
    }
}

fn spawn_event_forwarder(
    client: &LxdClient,
    cluster: &str,
    signals: mpsc::UnboundedSender<ClusterSignal>,
) -> tokio::task::AbortHandle {
    let mut events = client.events(&["lifecycle"]);
    let cluster = cluster.to_owned();
    let own = client
        .config()
        .identity
        .as_ref()
        .map(ClientIdentity::fingerprint);
    tokio::spawn(async move {
        while let Some(item) = events.recv().await {
            if let EventStreamItem::Event(event) = &item
                && is_our_own_doing(event, own.as_deref())
            {
                continue;
            }
            if signals
                .send(ClusterSignal {
                    cluster: cluster.clone(),
                    item,
                })
                .is_err()
            {
                return;
            }
        }
    })
    .abort_handle()
}

/// Whether an event only reports what the operator itself just did, and the reconcile that did
/// it knows: a change our own certificate asked for, or an instance created (by us, or by
/// someone else: a new instance is no drift of ours). Drift (a stop over the unix socket, a
/// crash, another client) still wakes the container's reconcile.
fn is_our_own_doing(event: &LxdEvent, own_fingerprint: Option<&str>) -> bool {
    let Some(lifecycle) = event.lifecycle() else {
        return false;
    };
    if lifecycle.action == LifecycleAction::InstanceCreated {
        return true;
    }
    !lifecycle.action.is_member_change()
        && own_fingerprint.is_some_and(|own| event.requested_by() == Some(own))
}

fn connection_key(cluster: &LxdCluster, secret_version: &str) -> String {
    let spec = serde_json::to_string(&cluster.spec).unwrap_or_default();
    // A formed cluster's members and pin live in status.
    let formed = serde_json::to_string(&formed_cluster(cluster)).unwrap_or_default();
    hex::encode(Sha256::digest(
        format!("{spec}\n{formed}\n{secret_version}").as_bytes(),
    ))
}

pub(super) fn invalid(field: &str, rule: impl Into<String>) -> ConnectionError {
    ConnectionError::InvalidSpec {
        field: field.to_owned(),
        rule: rule.into(),
    }
}

/// The LXD client configuration an LxdCluster describes, and the resourceVersion of the Secret
/// it read. A cluster formed from `spec.servers` is reached through the servers that are its
/// members, pinned to the cluster certificate learned when it was bootstrapped.
async fn client_config(
    kube: &kube::Client,
    cluster: &LxdCluster,
    scope: &SecretScope,
) -> Result<(ClientConfig, String), ConnectionError> {
    let spec = &cluster.spec;
    let mut endpoints = spec
        .endpoints
        .iter()
        .enumerate()
        .map(|(index, text)| {
            Endpoint::parse(text)
                .map_err(|e| invalid(&format!("spec.endpoints[{index}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let formed = formed_cluster(cluster);
    if endpoints.is_empty() {
        endpoints = formed
            .iter()
            .flat_map(|(addresses, _)| addresses)
            .filter_map(|address| Endpoint::parse(address).ok())
            .collect();
    }
    if endpoints.is_empty() {
        if !spec.servers.is_empty() {
            return Err(ConnectionError::Forming);
        }
        return Err(invalid(
            "spec.endpoints",
            "list at least one endpoint, or servers to form a cluster from",
        ));
    }
    let needs_tls = endpoints
        .iter()
        .any(|e| matches!(e, Endpoint::Https { .. }));
    let trust = match (&spec.server_certificate, spec.insecure_skip_tls_verify) {
        (_, true) => ServerTrust::InsecureSkipVerify,
        (Some(pin), false) => pinned_certificate(pin)?,
        (None, false) => match formed.and_then(|(_, fingerprint)| fingerprint) {
            Some(fingerprint) => ServerTrust::from_fingerprint(&fingerprint)
                .map_err(|e| invalid("status.clusterCertificateFingerprint", e.to_string()))?,
            None if needs_tls => {
                return Err(invalid(
                    "spec.serverCertificate",
                    "https endpoints need the server certificate to pin (or insecureSkipTlsVerify)",
                ));
            }
            None => ServerTrust::InsecureSkipVerify,
        },
    };
    let (identity, secret_version) = match &spec.client_cert_secret_ref {
        Some(reference) => {
            let (identity, version) = read_identity(kube, reference, scope).await?;
            (Some(identity), version)
        }
        None if needs_tls => {
            return Err(invalid(
                "spec.clientCertSecretRef",
                "https endpoints need a client certificate Secret",
            ));
        }
        None => (None, String::new()),
    };
    let mut config = ClientConfig::new(endpoints, identity, trust);
    config.project.clone_from(&spec.project);
    config.all_projects = spec.project_mode == ProjectMode::PerNamespace;
    config.creates_per_member = usize::try_from(spec.creates_per_member).unwrap_or(usize::MAX);
    Ok((config, secret_version))
}

/// For a cluster formed from `spec.servers`: the addresses of the servers that are its members,
/// and the cluster certificate learned at bootstrap.
fn formed_cluster(cluster: &LxdCluster) -> Option<(Vec<String>, Option<String>)> {
    if cluster.spec.servers.is_empty() {
        return None;
    }
    let status = cluster.status.as_ref()?;
    let addresses = status
        .servers
        .iter()
        .filter(|s| {
            matches!(
                s.phase,
                ServerPhase::Online
                    | ServerPhase::Offline
                    | ServerPhase::Draining
                    | ServerPhase::Removing
            )
        })
        .map(|s| s.address.clone())
        .collect();
    Some((addresses, status.cluster_certificate_fingerprint.clone()))
}

/// The pin `spec.serverCertificate` describes.
pub(super) fn pinned_certificate(
    pin: &ServerCertificatePin,
) -> Result<ServerTrust, ConnectionError> {
    match (&pin.pem, &pin.fingerprint) {
        (Some(pem), None) => ServerTrust::from_certificate_pem(pem.as_bytes())
            .map_err(|e| invalid("spec.serverCertificate.pem", e.to_string())),
        (None, Some(fingerprint)) => ServerTrust::from_fingerprint(fingerprint)
            .map_err(|e| invalid("spec.serverCertificate.fingerprint", e.to_string())),
        _ => Err(invalid(
            "spec.serverCertificate",
            "set exactly one of pem and fingerprint",
        )),
    }
}

/// The client certificate and key of a `kubernetes.io/tls` Secret, and its resourceVersion.
pub(super) async fn read_identity(
    kube: &kube::Client,
    reference: &SecretReference,
    scope: &SecretScope,
) -> Result<(ClientIdentity, String), ConnectionError> {
    scope
        .check(&reference.namespace)
        .map_err(|rule| ConnectionError::SecretOutOfScope {
            field: "spec.clientCertSecretRef.namespace".to_owned(),
            rule,
        })?;
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &reference.namespace);
    let secret = secrets.get(&reference.name).await.map_err(|e| match &e {
        kube::Error::Api(status) if status.code == 404 => ConnectionError::Secret {
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            reason: "not found".to_owned(),
        },
        _ => ConnectionError::Kube(e),
    })?;
    let bad = |reason: String| ConnectionError::Secret {
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
        reason,
    };
    let data = secret.data.clone().unwrap_or_default();
    let cert = data
        .get("tls.crt")
        .ok_or_else(|| bad("has no key tls.crt".to_owned()))?;
    let key = data
        .get("tls.key")
        .ok_or_else(|| bad("has no key tls.key".to_owned()))?;
    let identity = ClientIdentity::from_pem(&cert.0, &key.0).map_err(|e| bad(e.to_string()))?;
    Ok((identity, secret.resource_version().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lifecycle(action: &str, requestor: Option<&str>) -> LxdEvent {
        let mut metadata = json!({"action": action, "source": "/1.0/instances/default-web-1"});
        if let Some(username) = requestor {
            metadata["requestor"] = json!({"username": username, "protocol": "tls"});
        }
        serde_json::from_value(
            json!({"type": "lifecycle", "location": "node2", "metadata": metadata}),
        )
        .unwrap()
    }

    #[test]
    fn our_own_changes_wake_nobody_and_drift_does() {
        let own = Some("df15ff4d");
        assert!(is_our_own_doing(
            &lifecycle("instance-started", Some("df15ff4d")),
            own
        ));
        assert!(is_our_own_doing(&lifecycle("instance-created", None), own));
        // Stopped over the unix socket, crashed, or by another client: drift.
        assert!(!is_our_own_doing(
            &lifecycle("instance-stopped", Some("root")),
            own
        ));
        assert!(!is_our_own_doing(&lifecycle("instance-stopped", None), own));
        assert!(!is_our_own_doing(
            &lifecycle("instance-deleted", Some("other")),
            own
        ));
        // Without a certificate of our own (a unix socket) nothing is ours.
        assert!(!is_our_own_doing(
            &lifecycle("instance-started", Some("root")),
            None
        ));
        assert!(!is_our_own_doing(
            &lifecycle("cluster-member-updated", Some("df15ff4d")),
            own
        ));
    }
}
