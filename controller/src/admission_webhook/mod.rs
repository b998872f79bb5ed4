//! The validating admission webhook: on Kubernetes, the API server asks it about every CREATE
//! and UPDATE of an LxdContainer or LxdContainerSet (the chart's ValidatingWebhookConfiguration),
//! and it answers as the embedded API server admits in standalone mode, with the same decision
//! (`lxd_operator_crds::admission`) and the same words (`lxd_operator_apiserver::objects::refusal`):
//! a guardrail or namespace refusal is a 422 naming the field, the value and the rule, a quota
//! refusal a 403 with the figures. It reads the LxdCluster, the Namespace's labels (only when
//! the cluster has a `namespaceSelector`) and, under a quota, the namespace's LxdContainers
//! through the API it is given, so it runs against any API server, the embedded one included.
//!
//! The embedded server holds a write's admission and its store write under one lock; a webhook
//! cannot, so writes it admitted against a quota are counted for a few seconds
//! ([`ADMITTED_HELD`]) until the listing shows them: a burst of creates (a set's children)
//! cannot each see the same room. Replicas do not share that memory: with several, a burst
//! spread over them can pass a quota by what they admit at the same moment, and the controller
//! does not check quotas again.
//!
//! Not to be confused with placement webhooks (`reconcile::container::placement::webhook`),
//! which the controller calls.

mod certificate;
pub mod review;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use lxd_operator_apiserver::objects::refusal;
use lxd_operator_apiserver::status::ApiError;
use lxd_operator_crds::admission::{ContainerWrite, container_spec_pointer};
use lxd_operator_crds::container::LxdContainerSpec;
use lxd_operator_crds::quota::Usage;
use lxd_operator_crds::{GROUP, LxdCluster, LxdClusterSpec, LxdContainer};

use review::Request;

/// The path the API server posts AdmissionReviews to.
pub const PATH: &str = "/validate";

/// How long a write admitted against a quota counts when the API server has not stored it yet
/// (or refused it after this webhook admitted it).
pub const ADMITTED_HELD: Duration = Duration::from_secs(10);

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The serving certificate or key file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM certificate or private key.
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("the serving certificate and key: {0}")]
    Tls(#[source] rustls::Error),
    /// Listening failed.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why what admission needs cannot be read from the API: answered 500, so that the webhook
/// configuration's `failurePolicy` decides.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    /// Reading the LxdCluster failed.
    #[error("cannot read LxdCluster {name}: {source}")]
    Cluster {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading the Namespace failed.
    #[error("cannot read Namespace {name}: {source}")]
    Namespace {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Listing the namespace's LxdContainers failed.
    #[error("cannot list the LxdContainers of namespace {namespace}: {source}")]
    Containers {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// A write admitted against a quota, counted until the listing shows it.
#[derive(Debug, Clone)]
struct AdmittedWrite {
    namespace: String,
    cluster: String,
    name: String,
    usage: Usage,
    at: Instant,
}

struct Webhook {
    client: kube::Client,
    /// Held from counting a quota to admitting against it, as the embedded server's turn.
    admitted: tokio::sync::Mutex<Vec<AdmittedWrite>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").finish_non_exhaustive()
    }
}

/// The webhook, bound and ready to serve.
pub struct AdmissionWebhook {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The address it listens on.
    pub address: SocketAddr,
}

impl std::fmt::Debug for AdmissionWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionWebhook")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl AdmissionWebhook {
    /// Reads the serving certificate (PEM, its chain after it) and key, and binds `listen`
    /// (port 0 picks a free one). The files are read again when they change.
    pub async fn bind(
        listen: SocketAddr,
        cert: &Path,
        key: &Path,
    ) -> Result<AdmissionWebhook, WebhookError> {
        let tls = certificate::tls_config(cert, key)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| WebhookError::Listen {
                address: listen,
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| WebhookError::Listen {
                address: listen,
                source,
            })?;
        Ok(AdmissionWebhook {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            address,
        })
    }

    /// Serves HTTPS until `shutdown` completes, reading what admission needs through `client`.
    pub async fn serve(
        self,
        client: kube::Client,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        tracing::info!(address = %self.address, "serving the admission webhook");
        lxd_operator_apiserver::connections::serve(
            "admission webhook",
            self.listener,
            router(client),
            Some(self.acceptor),
            lxd_operator_apiserver::Limits::default(),
            shutdown,
        )
        .await;
    }
}

/// The webhook's routes, for tests and for [`AdmissionWebhook::serve`].
pub fn router(client: kube::Client) -> axum::Router {
    axum::Router::new()
        .route(PATH, post(validate))
        .with_state(Arc::new(Webhook {
            client,
            admitted: tokio::sync::Mutex::default(),
        }))
}

async fn validate(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let request = match review::read(&body) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "admission webhook: a request that is no AdmissionReview");
            let status = ApiError::bad_request(error.to_string()).status();
            return (StatusCode::BAD_REQUEST, Json(status)).into_response();
        }
    };
    match webhook.admit(&request).await {
        Ok(None) => Json(review::allowed(&request.uid)).into_response(),
        Ok(Some(refused)) => {
            tracing::info!(kind = %request.kind, namespace = %request.namespace, name = %request.display_name, refusal = %refused.message, "admission webhook refused a write");
            Json(review::denied(&request.uid, refused.status())).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, kind = %request.kind, namespace = %request.namespace, name = %request.display_name, "admission webhook cannot decide");
            // Said in full: what could not be read, and why (an RBAC rule missing, say), is
            // what whoever reads the API server's "failed calling webhook" needs.
            let status = ApiError {
                code: 500,
                reason: "InternalError",
                message: format!("the admission webhook cannot decide: {error}"),
                details: None,
                allow: None,
            }
            .status();
            (StatusCode::INTERNAL_SERVER_ERROR, Json(status)).into_response()
        }
    }
}

impl Webhook {
    /// The refusal of `request`, if it is refused.
    async fn admit(&self, request: &Request) -> Result<Option<ApiError>, LookupError> {
        let Some(pointer) =
            container_spec_pointer(&request.kind).filter(|_| request.group == GROUP)
        else {
            return Ok(None);
        };
        if !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
            return Ok(None);
        }
        let spec: LxdContainerSpec = match request
            .object
            .pointer(pointer)
            .cloned()
            .map(serde_json::from_value)
        {
            Some(Ok(spec)) => spec,
            Some(Err(error)) => {
                return Ok(Some(unreadable(request, pointer, &error.to_string())));
            }
            None => return Ok(Some(unreadable(request, pointer, "missing"))),
        };
        // An old object whose spec cannot be read asked nothing that is kept: all is checked.
        let previous: Option<LxdContainerSpec> = request
            .old_object
            .as_ref()
            .and_then(|old| old.pointer(pointer).cloned())
            .and_then(|old| serde_json::from_value(old).ok());
        let cluster = spec.cluster_ref.name.clone();
        let cluster_spec = self.cluster_spec(&cluster).await?;
        let namespace_labels = if ContainerWrite::needs_namespace_labels(cluster_spec.as_ref()) {
            self.namespace_labels(&request.namespace).await?
        } else {
            BTreeMap::new()
        };
        let write = ContainerWrite {
            pointer,
            spec: &spec,
            previous: previous.as_ref(),
            cluster: cluster_spec.as_ref(),
            namespace: &request.namespace,
            namespace_labels: &namespace_labels,
        };
        let refuse = |decision| {
            refusal(
                decision,
                &request.group,
                &request.kind,
                &request.plural,
                &request.display_name,
            )
        };
        if write.quota().is_none() {
            return Ok(refuse(write.decide(Usage::default())));
        }
        let mut admitted = self.admitted.lock().await;
        let listed = self.containers(&request.namespace).await?;
        let now = Instant::now();
        admitted.retain(|write| now.duration_since(write.at) < ADMITTED_HELD);
        let used = usage(
            &listed,
            &admitted,
            &request.namespace,
            &cluster,
            &request.name,
        );
        let refused = refuse(write.decide(used));
        // A dry run stores nothing: it takes no room.
        if refused.is_none() && !request.dry_run {
            admitted.push(AdmittedWrite {
                namespace: request.namespace.clone(),
                cluster,
                name: request.name.clone(),
                usage: Usage::of([&spec]),
                at: now,
            });
        }
        Ok(refused)
    }

    /// The spec of the LxdCluster `name`, if it exists. Read as the embedded server reads its
    /// store: a spec that cannot be read counts as none (the safe defaults), so that an
    /// unreadable object never stalls admission.
    async fn cluster_spec(&self, name: &str) -> Result<Option<LxdClusterSpec>, LookupError> {
        let resource = ApiResource::erase::<LxdCluster>(&());
        let cluster = Api::<DynamicObject>::all_with(self.client.clone(), &resource)
            .get_opt(name)
            .await
            .map_err(|source| LookupError::Cluster {
                name: name.to_owned(),
                source,
            })?;
        Ok(cluster.and_then(|c| serde_json::from_value(c.data["spec"].clone()).ok()))
    }

    /// The name and spec of each LxdContainer of `namespace` (those whose spec can be read).
    async fn containers(
        &self,
        namespace: &str,
    ) -> Result<Vec<(String, LxdContainerSpec)>, LookupError> {
        let resource = ApiResource::erase::<LxdContainer>(&());
        let listed =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource)
                .list(&ListParams::default())
                .await
                .map_err(|source| LookupError::Containers {
                    namespace: namespace.to_owned(),
                    source,
                })?;
        Ok(listed
            .items
            .into_iter()
            .filter_map(|c| {
                let spec = serde_json::from_value(c.data["spec"].clone()).ok()?;
                Some((c.metadata.name.unwrap_or_default(), spec))
            })
            .collect())
    }

    async fn namespace_labels(&self, name: &str) -> Result<BTreeMap<String, String>, LookupError> {
        let namespace = Api::<Namespace>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(|source| LookupError::Namespace {
                name: name.to_owned(),
                source,
            })?;
        Ok(namespace
            .and_then(|n| n.metadata.labels)
            .unwrap_or_default())
    }
}

/// A 400 for an object whose container spec cannot be read (the CRD's schema refuses such
/// objects before admission; a webhook called otherwise says what it could not read).
fn unreadable(request: &Request, pointer: &str, why: &str) -> ApiError {
    let field = pointer.trim_start_matches('/').replace('/', ".");
    ApiError::bad_request(format!(
        "{}.{} \"{}\": {field}: cannot be read as a container spec: {why}",
        request.kind, request.group, request.display_name
    ))
}

/// What the LxdContainers of `namespace` on `cluster` other than `name` (none when it is empty:
/// an object the API server names itself) hold: those listed, and those admitted lately that
/// the listing does not show yet.
/// `listed`: each container's name and spec.
fn usage(
    listed: &[(String, LxdContainerSpec)],
    admitted: &[AdmittedWrite],
    namespace: &str,
    cluster: &str,
    name: &str,
) -> Usage {
    let others = listed
        .iter()
        .filter(|(listed, spec)| listed != name && spec.cluster_ref.name == cluster);
    let stored = Usage::of(others.map(|(_, spec)| spec));
    admitted
        .iter()
        .filter(|write| write.namespace == namespace && write.cluster == cluster)
        .filter(|write| name.is_empty() || write.name != name)
        .filter(|write| !listed.iter().any(|(listed, _)| *listed == write.name))
        .fold(stored, |sum, write| Usage {
            containers: sum.containers + write.usage.containers,
            cpu: sum.cpu + write.usage.cpu,
            memory: sum.memory + write.usage.memory,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, cpu: f64) -> (String, LxdContainerSpec) {
        let container = LxdContainer::builder(name).cpu(cpu).build();
        (name.to_owned(), container.spec)
    }

    fn admitted(name: &str, cpu: f64) -> AdmittedWrite {
        AdmittedWrite {
            namespace: "default".into(),
            cluster: "local".into(),
            name: name.into(),
            usage: Usage {
                containers: 1,
                cpu,
                memory: 0,
            },
            at: Instant::now(),
        }
    }

    #[test]
    fn usage_counts_what_is_listed_and_what_was_admitted_but_is_not_listed_yet() {
        let listed = [container("a", 1.0), container("b", 0.5)];
        let mut elsewhere = admitted("x", 4.0);
        elsewhere.cluster = "other".into();
        let pending = [admitted("b", 0.5), admitted("c", 0.25), elsewhere];
        let used = usage(&listed, &pending, "default", "local", "d");
        assert_eq!(used.containers, 3, "a and b listed, c admitted: {used:?}");
        assert!((used.cpu - 1.75).abs() < 1e-9, "{used:?}");
        // The object itself is not counted: an update replaces what it held.
        let used = usage(&listed, &pending, "default", "local", "a");
        assert_eq!(used.containers, 2);
        // Objects the API server names (generateName) are all counted.
        let unnamed = [admitted("", 0.5), admitted("", 0.5)];
        assert_eq!(usage(&[], &unnamed, "default", "local", "").containers, 2);
    }
}
