//! Watches: one JSON event per line over a chunked 200 response. A watch starts with the
//! current objects (resourceVersion empty or 0, or `sendInitialEvents`), or replays the log
//! from a resourceVersion; then it follows live changes. Bookmarks keep idle watches alive;
//! a resourceVersion older than the log is an in-stream `ERROR` 410, so clients relist.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::events;
use super::listing::ListOptions;
use super::objects::ApiState;
use super::registry::Resource;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::storage::{Change, StorageError};
use super::table;

/// How often an idle watch with bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

/// What a watch asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Namespace, or all.
    pub namespace: Option<String>,
    /// Selectors.
    pub options: ListOptions,
    /// `resourceVersion` (empty: start with the current objects).
    pub resource_version: String,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub initial_events: bool,
    /// Rows of a Table instead of objects.
    pub table: bool,
}

/// One watch event, serialized without copying its object.
#[derive(serde::Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = serde_json::to_vec(&Event { kind, object }).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

/// How a watch shows its events.
struct Shown<'a> {
    resource: &'a Resource,
    request: &'a WatchRequest,
    /// Objects go out as stored: no selector, no Table, no other form.
    as_stored: bool,
}

impl<'a> Shown<'a> {
    fn new(resource: &'a Resource, request: &'a WatchRequest) -> Self {
        let as_stored = !request.table
            && events::shown_as_stored(resource)
            && request.options.labels == LabelSelector::default()
            && request.options.fields == FieldSelector::default();
        Shown {
            resource,
            request,
            as_stored,
        }
    }

    /// The event line of an object (stored JSON) at `revision`, unless the selectors leave it
    /// out.
    fn line(&self, kind: &str, text: &str, revision: i64) -> Result<Option<Bytes>, ()> {
        if self.as_stored {
            return Ok(Some(stored_line(kind, text)));
        }
        let object: Value = serde_json::from_str(text).map_err(|_| ())?;
        let object = events::present(self.resource, object);
        let options = &self.request.options;
        if !(options.labels.matches(&object) && options.fields.matches(&object)) {
            return Ok(None);
        }
        let payload = if self.request.table {
            table::table(self.resource, &[object], revision, None)
        } else {
            object
        };
        Ok(Some(line(kind, &payload)))
    }
}

/// An event line around an object's stored JSON.
fn stored_line(kind: &str, object: &str) -> Bytes {
    let mut text = Vec::with_capacity(object.len() + kind.len() + 24);
    text.extend_from_slice(b"{\"type\":\"");
    text.extend_from_slice(kind.as_bytes());
    text.extend_from_slice(b"\",\"object\":");
    text.extend_from_slice(object.as_bytes());
    text.extend_from_slice(b"}\n");
    Bytes::from(text)
}

fn bookmark(resource: &Resource, revision: i64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let api_version = resource.api_version();
    json!({"kind": resource.kind, "apiVersion": api_version, "metadata": metadata})
}

/// Starts a watch and returns its streaming response.
pub fn start(
    state: &ApiState,
    resource: Resource,
    request: WatchRequest,
) -> Result<Response, ApiError> {
    let slot = state
        .watch_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::too_many_watches())?;
    // Subscribe before reading, so nothing falls between the read and the live stream.
    let live = state.store.subscribe();
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let state = state.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let _ = run(&state, &resource, request, live, &sender).await;
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn run(
    state: &ApiState,
    resource: &Resource,
    request: WatchRequest,
    mut live: broadcast::Receiver<Change>,
    sender: &mpsc::Sender<Bytes>,
) -> Result<(), ()> {
    let prefix = resource.prefix(request.namespace.as_deref());
    let shown = Shown::new(resource, &request);
    let send = |bytes: Bytes| async move { sender.send(bytes).await.map_err(|_| ()) };
    let mut last = 0i64;
    let from: Option<i64> = match request.resource_version.as_str() {
        "" | "0" => None,
        text => text.parse().ok(),
    };
    if request.initial_events || from.is_none() {
        let (texts, revision) = state.store.list_text(&prefix).map_err(|_| ())?;
        for text in texts {
            if let Some(bytes) = shown.line("ADDED", &text, revision)? {
                send(bytes).await?;
            }
        }
        last = revision;
        if request.initial_events {
            send(line("BOOKMARK", &bookmark(resource, revision, true))).await?;
        }
    } else if let Some(from) = from {
        let changes = match state.store.changes_since(&prefix, from) {
            Ok(changes) => changes,
            Err(error @ StorageError::Compacted { .. }) => {
                send(line("ERROR", &ApiError::from(error).status())).await?;
                return Ok(());
            }
            Err(_) => return Err(()),
        };
        for change in changes {
            last = change.revision;
            if let Some(bytes) =
                shown.line(change.kind.watch_type(), &change.text, change.revision)?
            {
                send(bytes).await?;
            }
        }
        last = last.max(from);
    }
    let deadline = tokio::time::Instant::now() + request.timeout;
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(()),
            () = sender.closed() => return Ok(()),
            _ = ticker.tick(), if request.bookmarks => {
                let revision = state.store.current_revision().map_err(|_| ())?.max(last);
                send(line("BOOKMARK", &bookmark(resource, revision, false))).await?;
            }
            change = live.recv() => match change {
                Ok(change) => {
                    if change.revision <= last || !change.key.starts_with(&prefix) {
                        continue;
                    }
                    last = change.revision;
                    if let Some(bytes) = shown.line(change.kind.watch_type(), &change.text, change.revision)? {
                        send(bytes).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // This watcher fell too far behind: make it relist.
                    send(line("ERROR", &ApiError::expired(last, last).status())).await?;
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}
