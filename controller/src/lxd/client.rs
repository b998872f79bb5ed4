//! The connection to one LXD cluster: its endpoints, which of them answer, and the one place
//! where every request is sent, answered and mapped to [`LxdError`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{LxdError, Result};
use super::pacing::CreateSlots;
use super::routes::MemberRoutes;
use super::tls::{ClientIdentity, ServerTrust, client_config};
use super::usage::UsageCache;
use crate::leader::Leadership;

/// How long a call may take unless it says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to one member may take before the next one is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// [`ClientConfig::events_idle_timeout`] by default: three of LXD's pings missed.
pub const DEFAULT_EVENTS_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per endpoint.
const MAX_IDLE_CONNECTIONS_PER_ENDPOINT: usize = 16;
/// Requests in flight to one cluster at once; more wait for a free slot. Bounds connections
/// (and LXD's load) when a burst of reconciles talks to the cluster at the same time.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 128;
/// Creates in flight on one member at once, unless configured otherwise (`hack/bench rollout
/// --pacing` measures a rollout at several limits).
pub const DEFAULT_CREATES_PER_MEMBER: usize = 1;
/// An endpoint that failed is tried last for this long, then trusted again.
const UNHEALTHY_FOR: Duration = Duration::from_secs(15);

/// Where one LXD member (or a standalone LXD) is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://host:port`.
    Https { host: String, port: u16 },
    /// A local unix socket (always trusted by LXD, no TLS).
    Unix(PathBuf),
}

impl Endpoint {
    /// Reads `https://host[:port]` (port 8443 by default) or `unix:///path/to/unix.socket`.
    pub fn parse(text: &str) -> Result<Endpoint> {
        let bad = |why: &str| LxdError::Config {
            message: format!("endpoint {text:?}: {why}"),
        };
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a unix endpoint needs an absolute path: unix:///path/to/unix.socket",
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("must be https://host:port or unix:///path"));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(bad("must not have a path"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad("has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        Ok(Endpoint::Https {
            host,
            port: url.port().unwrap_or(8443),
        })
    }

    /// How the endpoint is written in logs and errors.
    pub fn display(&self) -> String {
        match self {
            Endpoint::Https { host, port } if host.contains(':') => {
                format!("https://[{host}]:{port}")
            }
            Endpoint::Https { host, port } => format!("https://{host}:{port}"),
            Endpoint::Unix(path) => format!("unix://{}", path.display()),
        }
    }
}

/// Told about every request sent to LXD (for metrics).
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    /// One request (`call` says what for: [`Call::kind`]) to `endpoint` answered with `status`
    /// (`None`: no answer) after `duration`.
    fn observe(
        &self,
        endpoint: &str,
        method: &str,
        call: &str,
        status: Option<u16>,
        duration: Duration,
    );

    /// A create waited `waited` for its turn on its member.
    fn observe_create_turn(&self, _waited: Duration) {}
}

/// Everything needed to talk to one LXD cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Member endpoints, tried in this order while they answer.
    pub endpoints: Vec<Endpoint>,
    /// The client certificate presented over HTTPS (none for a unix socket).
    pub identity: Option<ClientIdentity>,
    /// How the server certificate is checked.
    pub trust: ServerTrust,
    /// The LXD project of every instance, profile, image and operation call, unless a view
    /// names its own ([`LxdClient::in_project`]).
    pub project: String,
    /// Whether instance listings and the event stream span every project (a cluster with a
    /// project per namespace keeps its instances in many). A view of one project
    /// ([`LxdClient::in_project`]) still lists only that project.
    pub all_projects: bool,
    /// Timeout of a call that does not set its own.
    pub request_timeout: Duration,
    /// Timeout of connecting to one endpoint.
    pub connect_timeout: Duration,
    /// The event stream is taken as dead when no frame comes for this long: LXD pings every
    /// 10 s, and the client pings a third of this, so a member that stopped answering (a
    /// half-open connection) is left for the next one instead of hanging the stream.
    pub events_idle_timeout: Duration,
    /// Creates in flight on one member at once; more wait their turn (0: no limit). LXD
    /// unpacks an image for each create, and beyond a few at once on one member every create
    /// slows down more than the overlap gains.
    pub creates_per_member: usize,
    /// Told about every request, if set.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Whether this replica may change anything: a change (any call but GET) is refused with
    /// [`LxdError::NotLeader`] once its lease ran out, so that work under way when leadership
    /// ended cannot reach LXD.
    pub leadership: Leadership,
}

impl ClientConfig {
    /// A configuration with the default project and timeouts.
    pub fn new(
        endpoints: Vec<Endpoint>,
        identity: Option<ClientIdentity>,
        trust: ServerTrust,
    ) -> Self {
        ClientConfig {
            endpoints,
            identity,
            trust,
            project: "default".to_owned(),
            all_projects: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            events_idle_timeout: DEFAULT_EVENTS_IDLE_TIMEOUT,
            creates_per_member: DEFAULT_CREATES_PER_MEMBER,
            observer: None,
            leadership: Leadership::unconditional(),
        }
    }
}

/// A client of one LXD cluster. Cheap to clone; clones share connections and endpoint health.
#[derive(Clone, Debug)]
pub struct LxdClient {
    pub(crate) inner: Arc<Inner>,
    /// The endpoint this view sends to first while it answers ([`LxdClient::on_member`]).
    route: Option<usize>,
    /// The LXD project of this view's calls ([`LxdClient::in_project`]).
    project: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) endpoints: Vec<EndpointClient>,
    /// Whether `GET /1.0/cluster/members/<name>/state` exists (LXD 5.0.2 answers 501).
    pub(crate) member_state_supported: Mutex<Option<bool>>,
    /// Which endpoint is which member, as the member list last said.
    pub(crate) routes: MemberRoutes,
    /// Creates in flight per member ([`ClientConfig::creates_per_member`]).
    pub(crate) create_slots: CreateSlots,
    /// Each member's last usage reading ([`LxdClient::member_usage`]).
    pub(crate) usage: UsageCache,
    in_flight: tokio::sync::Semaphore,
}

#[derive(Debug)]
pub(crate) struct EndpointClient {
    pub(crate) endpoint: Endpoint,
    base: String,
    http: reqwest::Client,
    failed_at: Mutex<Option<Instant>>,
}

/// The JSON envelope of every LXD answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) error_code: u16,
    #[serde(default)]
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) operation: String,
    #[serde(default)]
    pub(crate) metadata: Value,
}

/// One request to LXD, before it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
    pub(crate) if_match: Option<String>,
    pub(crate) timeout: Option<Duration>,
    /// Send to this endpoint first (index into the configured endpoints).
    pub(crate) prefer: Option<usize>,
    /// The answer is plain text (metrics), not LXD's JSON envelope.
    pub(crate) raw: bool,
}

impl Call {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Call {
        Call {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            if_match: None,
            timeout: None,
            prefer: None,
            raw: false,
        }
    }

    pub(crate) fn get(path: impl Into<String>) -> Call {
        Call::new(Method::GET, path)
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Call {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Call> {
        self.body = Some(serde_json::to_value(body).map_err(|e| LxdError::Config {
            message: format!("cannot encode request: {e}"),
        })?);
        Ok(self)
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Call {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn if_match(mut self, etag: &str) -> Call {
        self.if_match = Some(etag.to_owned());
        self
    }

    pub(crate) fn prefer(mut self, endpoint: usize) -> Call {
        self.prefer = Some(endpoint);
        self
    }

    /// What the call is for, in a word (a metrics label).
    pub(crate) fn kind(&self) -> &'static str {
        let mut segments = self.path.trim_start_matches("/1.0").split('/').skip(1);
        let first = segments.next().unwrap_or_default();
        let second = segments.next();
        let third = segments.next();
        match (&self.method, first, second, third) {
            (&Method::POST, "instances", None, _) => "create",
            (&Method::GET, "instances", None, _) => "instances",
            (&Method::PUT, "instances", Some(_), Some("state")) => "state",
            (&Method::GET, "instances", Some(_), None | Some("state")) => "instance",
            (&Method::PUT | &Method::PATCH, "instances", Some(_), None) => "update",
            (&Method::DELETE, "instances", Some(_), None) => "delete",
            (&Method::GET, "operations", Some(_), Some("wait")) => "wait",
            (_, "operations", _, _) => "operation",
            (_, "cluster", Some("members"), _) => "members",
            (_, "resources", _, _) | (_, "storage-pools", _, _) => "resources",
            (_, "metrics", _, _) => "metrics",
            _ => "other",
        }
    }

    /// Whether sending it twice does no harm, so a failure after it may have arrived can be
    /// retried on another member.
    fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        )
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Which endpoint answered.
    pub(crate) endpoint: usize,
    pub(crate) etag: Option<String>,
    pub(crate) envelope: Envelope,
}

impl Answer {
    pub(crate) fn metadata<T: DeserializeOwned>(self) -> Result<T> {
        serde_json::from_value(self.envelope.metadata.clone()).map_err(|e| {
            LxdError::UnexpectedResponse {
                endpoint: String::new(),
                status: 200,
                detail: format!("metadata does not have the expected shape: {e}"),
                body: quote(&self.envelope.metadata.to_string()),
            }
        })
    }
}

impl LxdClient {
    /// Prepares connections to every endpoint; nothing is sent yet.
    pub fn new(config: ClientConfig) -> Result<LxdClient> {
        if config.endpoints.is_empty() {
            return Err(LxdError::Config {
                message: "no endpoints".to_owned(),
            });
        }
        if config.trust == ServerTrust::InsecureSkipVerify {
            tracing::warn!(
                "LXD server certificates are not verified (insecure skip verify): anyone on the network path can impersonate the cluster"
            );
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| EndpointClient::new(endpoint, &config))
            .collect::<Result<Vec<_>>>()?;
        Ok(LxdClient {
            inner: Arc::new(Inner {
                create_slots: CreateSlots::new(config.creates_per_member),
                usage: UsageCache::default(),
                config,
                endpoints,
                member_state_supported: Mutex::new(None),
                routes: MemberRoutes::default(),
                in_flight: tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT),
            }),
            route: None,
            project: None,
        })
    }

    /// This client, sending to `member`'s own endpoint first while it answers (when that member
    /// is one of the configured endpoints): calls about an instance go where it lives instead of
    /// being forwarded there by another member.
    pub fn on_member(&self, member: &str) -> LxdClient {
        LxdClient {
            inner: self.inner.clone(),
            route: self.inner.routes.endpoint_of(member).or(self.route),
            project: self.project.clone(),
        }
    }

    /// This client, with every call in LXD project `project`: calls about one container's
    /// instance go to the project it lives in.
    pub fn in_project(&self, project: &str) -> LxdClient {
        LxdClient {
            inner: self.inner.clone(),
            route: self.route,
            project: Some(Arc::from(project)),
        }
    }

    /// This client, for calls about `instance`: to its member first, in its project.
    pub fn for_instance(&self, instance: &super::types::Instance) -> LxdClient {
        let client = self.on_member(&instance.location);
        if instance.project.is_empty() {
            client
        } else {
            client.in_project(&instance.project)
        }
    }

    /// The LXD project of this client's calls.
    pub fn project(&self) -> &str {
        self.project
            .as_deref()
            .unwrap_or(&self.inner.config.project)
    }

    /// Whether listings from this client span every project.
    pub(crate) fn lists_all_projects(&self) -> bool {
        self.project.is_none() && self.inner.config.all_projects
    }

    /// `call`, listing instances of every project when this client spans them.
    pub(crate) fn listing(&self, call: Call) -> Call {
        if self.lists_all_projects() {
            call.query("all-projects", "true")
        } else {
            call
        }
    }

    /// Which configured endpoint is `member`, as far as the member list has told.
    pub fn endpoint_of_member(&self, member: &str) -> Option<usize> {
        self.inner.routes.endpoint_of(member)
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The endpoints in the order the next call tries them: answering ones first, in configured
    /// order, then those that failed lately.
    pub fn endpoint_order(&self) -> Vec<usize> {
        let (healthy, unhealthy): (Vec<usize>, Vec<usize>) = (0..self.inner.endpoints.len())
            .partition(|&index| self.inner.endpoints[index].is_healthy());
        healthy.into_iter().chain(unhealthy).collect()
    }

    /// The endpoint at `index`, as configured.
    pub fn endpoint(&self, index: usize) -> Option<&Endpoint> {
        self.inner.endpoints.get(index).map(|e| &e.endpoint)
    }

    /// Sends a call, moving on to the next endpoint when a member cannot be reached or answers
    /// that it is unavailable (502, 503, 504). A member that answers with an error of LXD's own
    /// (400, 404, a 500 with LXD's message, ...) is not asked again elsewhere: another member
    /// would give the same answer, and a create might run twice.
    pub(crate) async fn send(&self, mut call: Call) -> Result<Answer> {
        if !call
            .query
            .iter()
            .any(|(key, _)| key == "project" || key == "all-projects")
        {
            call.query
                .push(("project".to_owned(), self.project().to_owned()));
        }
        if call.method != Method::GET && !self.inner.config.leadership.holds() {
            return Err(LxdError::NotLeader {
                message: format!(
                    "{} {} not sent: this replica's lease ran out",
                    call.method, call.path
                ),
            });
        }
        let _slot = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| LxdError::Unavailable {
                message: "client is shutting down".to_owned(),
            })?;
        let mut order = self.endpoint_order();
        // An explicit preference (where an operation lives) goes first whatever its health; a
        // view's member route only while that member answers.
        let routed = self.route.filter(|&index| {
            self.inner
                .endpoints
                .get(index)
                .is_some_and(|e| e.is_healthy())
        });
        if let Some(preferred) = call
            .prefer
            .or(routed)
            .filter(|&p| p < self.inner.endpoints.len())
        {
            order.retain(|&index| index != preferred);
            order.insert(0, preferred);
        }
        let mut failures = Vec::new();
        for index in order {
            let endpoint = &self.inner.endpoints[index];
            let started = Instant::now();
            let outcome = endpoint.send(&call, &self.inner.config).await;
            tracing::trace!(
                method = %call.method,
                path = %call.path,
                endpoint = %endpoint.endpoint.display(),
                ok = outcome.is_ok(),
                millis = started.elapsed().as_millis() as u64,
                "LXD request"
            );
            if let Some(observer) = &self.inner.config.observer {
                let status = match &outcome {
                    Ok(_) => Some(200),
                    Err(Failure::Answered(error)) => Some(error_status(error)),
                    Err(_) => None,
                };
                observer.observe(
                    &endpoint.endpoint.display(),
                    call.method.as_str(),
                    call.kind(),
                    status,
                    started.elapsed(),
                );
            }
            match outcome {
                Ok(answer) => {
                    endpoint.mark_healthy();
                    return Ok(Answer {
                        endpoint: index,
                        ..answer
                    });
                }
                Err(Failure::Unreachable(message)) => {
                    endpoint.mark_failed();
                    tracing::debug!(endpoint = %endpoint.endpoint.display(), %message, "LXD endpoint unreachable; trying the next");
                    failures.push(format!("{}: {message}", endpoint.endpoint.display()));
                }
                Err(Failure::MaybeArrived(error)) if call.is_idempotent() => {
                    endpoint.mark_failed();
                    failures.push(format!("{}: {error}", endpoint.endpoint.display()));
                }
                Err(Failure::MaybeArrived(error) | Failure::Answered(error)) => {
                    endpoint.mark_healthy();
                    return Err(error);
                }
            }
        }
        Err(LxdError::Unavailable {
            message: failures.join("; "),
        })
    }

    /// Sends a call whose answer is plain text, and returns the text.
    pub(crate) async fn send_raw(&self, mut call: Call) -> Result<String> {
        call.raw = true;
        let answer = self.send(call).await?;
        Ok(answer
            .envelope
            .metadata
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Sends a call and reads the answer's metadata as `T`.
    pub(crate) async fn fetch<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        self.send(call).await?.metadata()
    }
}

/// Why one endpoint did not give an answer.
enum Failure {
    /// Nothing reached LXD (connection refused, TLS failure before the request, ...) or it said
    /// it is unavailable: safe to try another member.
    Unreachable(String),
    /// The request may have reached LXD (a timeout waiting for the answer).
    MaybeArrived(LxdError),
    /// LXD answered with an error of its own.
    Answered(LxdError),
}

impl EndpointClient {
    fn new(endpoint: &Endpoint, config: &ClientConfig) -> Result<EndpointClient> {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS_PER_ENDPOINT)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("lxd-operator/", env!("CARGO_PKG_VERSION")));
        // reqwest wants a TLS configuration even for a unix socket, where it goes unused.
        let tls = client_config(
            config.identity.as_ref(),
            &config.trust,
            &[b"h2", b"http/1.1"],
        )?;
        let builder = builder.tls_backend_preconfigured(tls);
        let (builder, base) = match endpoint {
            Endpoint::Https { .. } => (builder, endpoint.display()),
            Endpoint::Unix(path) => (builder.unix_socket(path.clone()), "http://lxd".to_owned()),
        };
        let http = builder.build().map_err(|e| LxdError::Config {
            message: format!("cannot set up HTTP client for {}: {e}", endpoint.display()),
        })?;
        Ok(EndpointClient {
            endpoint: endpoint.clone(),
            base,
            http,
            failed_at: Mutex::new(None),
        })
    }

    fn is_healthy(&self) -> bool {
        self.failed_at
            .lock()
            .map(|failed| failed.is_none_or(|at| at.elapsed() > UNHEALTHY_FOR))
            .unwrap_or(true)
    }

    fn mark_failed(&self) {
        if let Ok(mut failed) = self.failed_at.lock() {
            *failed = Some(Instant::now());
        }
    }

    fn mark_healthy(&self) {
        if let Ok(mut failed) = self.failed_at.lock() {
            *failed = None;
        }
    }

    async fn send(
        &self,
        call: &Call,
        config: &ClientConfig,
    ) -> std::result::Result<Answer, Failure> {
        let display = self.endpoint.display();
        let url = format!("{}{}", self.base, call.path);
        let query = &call.query;
        let timeout = call.timeout.unwrap_or(config.request_timeout);
        let mut request = self
            .http
            .request(call.method.clone(), &url)
            .query(&query)
            .timeout(timeout);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        if let Some(etag) = &call.if_match {
            request = request.header(reqwest::header::IF_MATCH, etag);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(classify_send_error(&display, error, timeout, call)),
        };
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Err(classify_send_error(&display, error, timeout, call)),
        };
        if call.raw && status == 200 {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let envelope = Envelope {
                kind: "sync".to_owned(),
                error_code: 0,
                error: String::new(),
                operation: String::new(),
                metadata: Value::String(text),
            };
            return Ok(Answer {
                endpoint: 0,
                etag,
                envelope,
            });
        }
        if matches!(status, 502..=504) {
            return Err(Failure::Unreachable(format!(
                "HTTP {status}: {}",
                quote(&String::from_utf8_lossy(&bytes))
            )));
        }
        let envelope: Envelope = match serde_json::from_slice(&bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                return Err(Failure::Answered(LxdError::UnexpectedResponse {
                    endpoint: display,
                    status,
                    detail: format!("not an LXD JSON answer ({e})"),
                    body: quote(&String::from_utf8_lossy(&bytes)),
                }));
            }
        };
        if envelope.kind == "error" || status >= 400 {
            let code = if envelope.error_code != 0 {
                envelope.error_code
            } else {
                status
            };
            let message = if envelope.error.is_empty() {
                format!("HTTP {status}")
            } else {
                envelope.error.clone()
            };
            if code == 403 {
                return Err(Failure::Answered(LxdError::Untrusted { message }));
            }
            return Err(Failure::Answered(LxdError::from_lxd(code, &message)));
        }
        Ok(Answer {
            endpoint: 0,
            etag,
            envelope,
        })
    }
}

/// The HTTP-like status an answered error stands for, for metrics.
fn error_status(error: &LxdError) -> u16 {
    match error {
        LxdError::NotFound { .. } => 404,
        LxdError::AlreadyExists { .. } => 409,
        LxdError::Conflict { .. } => 412,
        LxdError::Invalid { .. } => 400,
        LxdError::Untrusted { .. } => 403,
        LxdError::Unavailable { .. } => 503,
        _ => 500,
    }
}

fn classify_send_error(
    endpoint: &str,
    error: reqwest::Error,
    timeout: Duration,
    call: &Call,
) -> Failure {
    let chain = error_chain(&error);
    if error.is_connect() {
        // A pin mismatch shows up as a connect error too, but no other member will pass it.
        if chain.contains("certificate") || chain.contains("Certificate") {
            return Failure::Answered(LxdError::Tls {
                endpoint: endpoint.to_owned(),
                message: chain,
            });
        }
        return Failure::Unreachable(chain);
    }
    if error.is_timeout() {
        return Failure::MaybeArrived(LxdError::Timeout {
            what: format!("{} {} at {endpoint}", call.method, call.path),
            after: timeout,
        });
    }
    Failure::MaybeArrived(LxdError::Unavailable {
        message: format!("{endpoint}: {chain}"),
    })
}

/// The error and its sources, joined: reqwest's own message alone hides the cause.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most 500 characters of a body, for error messages.
pub(crate) fn quote(body: &str) -> String {
    const LIMIT: usize = 500;
    if body.chars().count() <= LIMIT {
        body.to_owned()
    } else {
        format!("{}…", body.chars().take(LIMIT).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_as_users_write_them() {
        assert_eq!(
            Endpoint::parse("https://127.0.0.2:8443").unwrap(),
            Endpoint::Https {
                host: "127.0.0.2".into(),
                port: 8443
            }
        );
        assert_eq!(
            Endpoint::parse("https://lxd.example.org").unwrap(),
            Endpoint::Https {
                host: "lxd.example.org".into(),
                port: 8443
            }
        );
        assert_eq!(
            Endpoint::parse("https://[::1]:9443/").unwrap().display(),
            "https://[::1]:9443"
        );
        assert_eq!(
            Endpoint::parse("unix:///var/snap/lxd/common/lxd/unix.socket").unwrap(),
            Endpoint::Unix("/var/snap/lxd/common/lxd/unix.socket".into())
        );
        for bad in [
            "http://127.0.0.1:8443",
            "unix://relative.socket",
            "https://host/1.0",
            "127.0.0.1:8443",
        ] {
            let error = Endpoint::parse(bad).unwrap_err();
            assert!(matches!(error, LxdError::Config { .. }), "{bad}: {error}");
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn calls_are_named_for_what_they_do() {
        let kind = |method: Method, path: &str| Call::new(method, path).kind();
        assert_eq!(kind(Method::POST, "/1.0/instances"), "create");
        assert_eq!(kind(Method::GET, "/1.0/instances"), "instances");
        assert_eq!(kind(Method::GET, "/1.0/instances/web"), "instance");
        assert_eq!(kind(Method::GET, "/1.0/instances/web/state"), "instance");
        assert_eq!(kind(Method::PUT, "/1.0/instances/web/state"), "state");
        assert_eq!(kind(Method::PUT, "/1.0/instances/web"), "update");
        assert_eq!(kind(Method::DELETE, "/1.0/instances/web"), "delete");
        assert_eq!(kind(Method::GET, "/1.0/operations/abc/wait"), "wait");
        assert_eq!(kind(Method::GET, "/1.0/operations"), "operation");
        assert_eq!(kind(Method::GET, "/1.0/cluster/members"), "members");
        assert_eq!(kind(Method::GET, "/1.0/resources"), "resources");
        assert_eq!(kind(Method::GET, "/1.0/metrics"), "metrics");
        assert_eq!(kind(Method::GET, "/1.0"), "other");
    }

    #[test]
    fn long_bodies_are_quoted_short() {
        assert_eq!(quote("short"), "short");
        assert_eq!(quote(&"x".repeat(600)).chars().count(), 501);
    }
}
