//! What a write means, as a Kubernetes API server does it, one file per verb family:
//! `create.rs`, `update.rs` (PUT and the patches), `apply.rs` (server-side apply, with kubectl's
//! takeover of client-side applied fields), `delete.rs` (finalizers, garbage collection of
//! dependents, the namespace cascade), `scale.rs` (the scale subresource), `crd.rs` (a
//! CustomResourceDefinition served as it is written) and `admission.rs` (what a container may
//! ask of LXD, by its cluster's guardrails). `write.rs` holds what they share: metadata the server owns (uid, timestamps,
//! generation; the store sets resourceVersion), optimistic concurrency and retries of lost
//! races, the status subresource, schema pruning, defaults and validation, and writes that
//! change nothing.
//! Reads are in [`crate::listing`].

mod admission;
mod apply;
mod crd;
mod create;
mod delete;
mod scale;
mod update;
mod write;

use std::sync::Arc;

use serde_json::Value;

use crate::registry::Registry;
use crate::status::ApiError;
use crate::storage::Storage;

pub use admission::refusal;
pub use scale::{ScaleWrite, scale_of};
pub(crate) use write::meta_str;
pub use write::now;

/// The API's state: the store and the kinds it serves.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Objects and their history.
    pub store: Arc<dyn Storage>,
    /// Served kinds.
    pub registry: Registry,
    /// One permit per watch that may be open ([`crate::Limits::max_watches`]).
    pub watch_slots: Arc<tokio::sync::Semaphore>,
    /// Held from a container's admission to its store write, so that writes checked against
    /// a quota at the same moment do not each see the room the other takes.
    pub admission: Arc<std::sync::Mutex<()>>,
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply,
}

/// What to do with fields the schema does not declare (`fieldValidation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (a `Warning` header); the server's default.
    #[default]
    Warn,
    /// Refuse the write (400).
    Strict,
}

impl FieldValidation {
    /// Reads the `fieldValidation` query parameter.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or_default() {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }
}

/// The options every write takes (its query parameters).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager` (or the client's user agent): who owns the fields written.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force`: a server-side apply takes fields other managers own.
    pub force: bool,
}

impl WriteOptions {
    pub(crate) fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("unknown")
    }
}

/// The answer to a write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored (or as it would be, in a dry run).
    pub object: Value,
    /// Warnings for the client (`Warning` headers).
    pub warnings: Vec<String>,
    /// Whether the write created the object (an apply of a missing object).
    pub created: bool,
}

impl Written {
    pub(crate) fn new(object: Value, warnings: Vec<String>) -> Self {
        Written {
            object,
            warnings,
            created: false,
        }
    }
}
