//! LXD's event stream: lifecycle and operation events of every member, over one websocket.
//!
//! Every member's `/1.0/events` carries the events of all members (LXD's event hubs form a full
//! mesh; each event names its `location`), so one stream per cluster is enough. When it breaks,
//! the stream reconnects with backoff (and jitter, so that many operators do not return at
//! once) to the next endpoint and says so with [`EventStreamItem::Connected`]: events may have
//! been missed in between, so a consumer resynchronises on every `Connected`. A member that
//! stops answering without closing the connection (a half-open TCP connection, a paused
//! daemon) would hang the stream forever: the client pings, and a stream with no frame for
//! [`ClientConfig::events_idle_timeout`](super::ClientConfig::events_idle_timeout) is dropped.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Endpoint, LxdClient};
use super::error::{LxdError, Result};
use super::tls::client_config;

/// Backoff between reconnects: doubles from the first to the last value.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Events buffered for a slow consumer before the stream waits for it.
const BUFFER: usize = 1024;

/// One item of the event stream.
#[derive(Debug, Clone)]
pub enum EventStreamItem {
    /// The stream (re)connected to this endpoint: events before this may have been missed.
    Connected { endpoint: String },
    /// An event.
    Event(LxdEvent),
    /// The stream broke; it reconnects by itself.
    Disconnected { endpoint: String, error: String },
    /// The stream is alive (LXD pinged or answered a ping): sent at most every few seconds,
    /// for health checks; carries no event.
    Alive,
}

/// An event as LXD sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct LxdEvent {
    /// `lifecycle`, `operation` or `logging`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339).
    #[serde(default)]
    pub timestamp: String,
    /// The member it happened on.
    #[serde(default)]
    pub location: String,
    /// The project.
    #[serde(default)]
    pub project: String,
    /// The event's own data.
    #[serde(default)]
    pub metadata: Value,
}

/// A lifecycle event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// What happened.
    pub action: LifecycleAction,
    /// The API path of what it happened to, e.g. `/1.0/instances/web-1`.
    pub source: String,
}

/// Lifecycle actions the operator reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleAction {
    InstanceCreated,
    InstanceStarted,
    /// Stopped by force or by LXD.
    InstanceStopped,
    /// Shut down gracefully or from inside.
    InstanceShutdown,
    InstanceRestarted,
    InstancePaused,
    InstanceResumed,
    InstanceUpdated,
    InstanceRenamed,
    InstanceDeleted,
    ClusterMemberAdded,
    ClusterMemberRemoved,
    ClusterMemberUpdated,
    ClusterMemberRenamed,
    /// Any other action, as LXD names it.
    Other(String),
}

impl LifecycleAction {
    /// Whether it changes the cluster's membership (a member added, removed, updated or
    /// renamed) rather than an instance.
    pub fn is_member_change(&self) -> bool {
        matches!(
            self,
            LifecycleAction::ClusterMemberAdded
                | LifecycleAction::ClusterMemberRemoved
                | LifecycleAction::ClusterMemberUpdated
                | LifecycleAction::ClusterMemberRenamed
        )
    }

    /// Whether it changes what the member's instances are limited to (one made, changed or
    /// deleted).
    pub fn changes_allocation(&self) -> bool {
        matches!(
            self,
            LifecycleAction::InstanceCreated
                | LifecycleAction::InstanceUpdated
                | LifecycleAction::InstanceDeleted
        )
    }

    fn from_name(name: &str) -> LifecycleAction {
        match name {
            "instance-created" => LifecycleAction::InstanceCreated,
            "instance-started" => LifecycleAction::InstanceStarted,
            "instance-stopped" => LifecycleAction::InstanceStopped,
            "instance-shutdown" => LifecycleAction::InstanceShutdown,
            "instance-restarted" => LifecycleAction::InstanceRestarted,
            "instance-paused" => LifecycleAction::InstancePaused,
            "instance-resumed" => LifecycleAction::InstanceResumed,
            "instance-updated" => LifecycleAction::InstanceUpdated,
            "instance-renamed" => LifecycleAction::InstanceRenamed,
            "instance-deleted" => LifecycleAction::InstanceDeleted,
            "cluster-member-added" => LifecycleAction::ClusterMemberAdded,
            "cluster-member-removed" => LifecycleAction::ClusterMemberRemoved,
            "cluster-member-updated" => LifecycleAction::ClusterMemberUpdated,
            "cluster-member-renamed" => LifecycleAction::ClusterMemberRenamed,
            other => LifecycleAction::Other(other.to_owned()),
        }
    }
}

impl LxdEvent {
    /// The lifecycle event this is, if it is one.
    pub fn lifecycle(&self) -> Option<Lifecycle> {
        if self.kind != "lifecycle" {
            return None;
        }
        let action = self.metadata.get("action")?.as_str()?;
        let source = self
            .metadata
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some(Lifecycle {
            action: LifecycleAction::from_name(action),
            source: source.to_owned(),
        })
    }

    /// Who asked for the change a lifecycle event reports: LXD's `requestor.username` (the
    /// SHA-256 fingerprint of a TLS client's certificate, `root` over the unix socket). None
    /// for changes nobody asked for (a crash) and for events LXD 5.0 sends without it
    /// (`instance-created`).
    pub fn requested_by(&self) -> Option<&str> {
        self.metadata.get("requestor")?.get("username")?.as_str()
    }

    /// The instance this event is about: the source of a lifecycle event, or the first
    /// instance an operation acts on.
    pub fn instance_name(&self) -> Option<String> {
        let from_path = |path: &str| {
            path.split('?')
                .next()?
                .strip_prefix("/1.0/instances/")
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
        };
        if let Some(lifecycle) = self.lifecycle() {
            return from_path(&lifecycle.source);
        }
        let instances = self
            .metadata
            .get("resources")?
            .get("instances")?
            .as_array()?;
        instances
            .iter()
            .filter_map(Value::as_str)
            .find_map(from_path)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl LxdClient {
    /// Starts following the cluster's events of the given types (`lifecycle`, `operation`,
    /// `logging`). The stream runs until the receiver is dropped.
    pub fn events(&self, types: &[&str]) -> mpsc::Receiver<EventStreamItem> {
        let (sender, receiver) = mpsc::channel(BUFFER);
        let client = self.clone();
        let types = types.join(",");
        tokio::spawn(async move { client.follow_events(&types, sender).await });
        receiver
    }

    async fn follow_events(&self, types: &str, sender: mpsc::Sender<EventStreamItem>) {
        let mut backoff = BACKOFF_FIRST;
        let mut next = 0usize;
        loop {
            // Start with the healthiest endpoint, then rotate through the others on failures.
            let order = self.endpoint_order();
            let index = order[next % order.len()];
            let display = self
                .endpoint(index)
                .map(Endpoint::display)
                .unwrap_or_default();
            let error = match self.connect_events(index, types).await {
                Ok(socket) => {
                    backoff = BACKOFF_FIRST;
                    if sender
                        .send(EventStreamItem::Connected {
                            endpoint: display.clone(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let idle = self.config().events_idle_timeout;
                    let (mut pings, mut frames) = socket.split();
                    let mut ping_every = tokio::time::interval(idle / 3);
                    ping_every.tick().await;
                    let mut last_frame = tokio::time::Instant::now();
                    let mut next_alive = last_frame;
                    loop {
                        let frame = tokio::select! {
                            frame = frames.next() => frame,
                            _ = ping_every.tick() => {
                                // A failed send shows as a broken stream on the next read.
                                let _ = pings.send(Message::Ping(Vec::new().into())).await;
                                continue;
                            }
                            () = tokio::time::sleep_until(last_frame + idle) => {
                                break format!("no frame from LXD for {} s (pings unanswered)", idle.as_secs());
                            }
                        };
                        last_frame = tokio::time::Instant::now();
                        if last_frame >= next_alive {
                            next_alive = last_frame + idle / 3;
                            if sender.send(EventStreamItem::Alive).await.is_err() {
                                return;
                            }
                        }
                        match frame {
                            Some(Ok(Message::Text(text))) => {
                                match serde_json::from_str::<LxdEvent>(&text) {
                                    Ok(event) => {
                                        if sender.send(EventStreamItem::Event(event)).await.is_err()
                                        {
                                            return;
                                        }
                                    }
                                    Err(error) => {
                                        tracing::warn!(%error, body = %super::client::quote(&text), "unreadable LXD event skipped")
                                    }
                                }
                            }
                            Some(Ok(Message::Close(frame))) => {
                                break format!("closed by LXD: {frame:?}");
                            }
                            Some(Ok(_)) => {}
                            Some(Err(error)) => break error.to_string(),
                            None => break "stream ended".to_owned(),
                        }
                    }
                }
                Err(error) => error.to_string(),
            };
            if sender
                .send(EventStreamItem::Disconnected {
                    endpoint: display,
                    error,
                })
                .await
                .is_err()
            {
                return;
            }
            next += 1;
            tokio::time::sleep(crate::jitter::jittered(backoff, 0.5)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect_events(
        &self,
        index: usize,
        types: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<Box<dyn Io>>> {
        let config = self.config();
        let endpoint = self
            .endpoint(index)
            .cloned()
            .ok_or_else(|| LxdError::Config {
                message: "no such endpoint".to_owned(),
            })?;
        let query = if config.all_projects {
            format!("type={types}&all-projects=true")
        } else {
            format!("type={types}&project={}", config.project)
        };
        let connect_timeout = config.connect_timeout;
        let unavailable = |what: String| LxdError::Unavailable {
            message: format!("{}: {what}", endpoint.display()),
        };
        let (stream, url): (Box<dyn Io>, String) =
            match &endpoint {
                Endpoint::Https { host, port } => {
                    let tcp = tokio::time::timeout(
                        connect_timeout,
                        TcpStream::connect((host.as_str(), *port)),
                    )
                    .await
                    .map_err(|_| unavailable("connect timed out".to_owned()))?
                    .map_err(|e| unavailable(e.to_string()))?;
                    // No ALPN: with h2 offered, LXD negotiates HTTP/2 and the websocket upgrade fails.
                    let tls = client_config(config.identity.as_ref(), &config.trust, &[])?;
                    let server_name = rustls_pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| LxdError::Config {
                            message: format!("bad host {host}: {e}"),
                        })?;
                    let stream = tokio::time::timeout(
                        connect_timeout,
                        tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(server_name, tcp),
                    )
                    .await
                    .map_err(|_| unavailable("TLS handshake timed out".to_owned()))?
                    .map_err(|e| LxdError::Tls {
                        endpoint: endpoint.display(),
                        message: e.to_string(),
                    })?;
                    let authority = if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    };
                    (
                        Box::new(stream),
                        format!("wss://{authority}/1.0/events?{query}"),
                    )
                }
                Endpoint::Unix(path) => {
                    let stream = UnixStream::connect(path)
                        .await
                        .map_err(|e| unavailable(e.to_string()))?;
                    (
                        Box::new(stream),
                        format!("ws://localhost/1.0/events?{query}"),
                    )
                }
            };
        let (socket, _response) = tokio::time::timeout(
            connect_timeout,
            tokio_tungstenite::client_async(url, stream),
        )
        .await
        .map_err(|_| unavailable("websocket upgrade timed out".to_owned()))?
        .map_err(|error| match &error {
            tokio_tungstenite::tungstenite::Error::Http(response)
                if response.status().as_u16() == 403 =>
            {
                LxdError::Untrusted {
                    message: "LXD refused the event stream: not authorized".to_owned(),
                }
            }
            _ => unavailable(format!("websocket: {error}")),
        })?;
        Ok(socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_operation_events_name_their_instance() {
        let lifecycle: LxdEvent = serde_json::from_str(
            r#"{"type":"lifecycle","timestamp":"2026-11-25T03:00:00Z","location":"node2","project":"default",
                "metadata":{"action":"instance-started","source":"/1.0/instances/web-1","context":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            lifecycle.lifecycle().unwrap().action,
            LifecycleAction::InstanceStarted
        );
        assert_eq!(lifecycle.instance_name().as_deref(), Some("web-1"));
        let operation: LxdEvent = serde_json::from_str(
            r#"{"type":"operation","location":"node3","metadata":{"id":"x","resources":{"instances":["/1.0/instances/db-1?project=default"]}}}"#,
        )
        .unwrap();
        assert!(operation.lifecycle().is_none());
        assert_eq!(operation.instance_name().as_deref(), Some("db-1"));
    }
}
