//! Errors as Kubernetes `Status` objects, mapped in one place (`IntoResponse`), without
//! internal details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::schema::validation::FieldError;

/// An error the API answers with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// Kubernetes reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status.
    pub details: Option<Value>,
    /// The methods the path takes, sent as `Allow` with a 405 (RFC 9110 requires it).
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            allow: None,
        }
    }

    /// 404 for one object.
    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        let resource = qualified(group, plural);
        ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 on create.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        let resource = qualified(group, plural);
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 403 for a write admission refuses (a quota), as Kubernetes words it.
    pub fn forbidden(group: &str, plural: &str, name: &str, why: &str) -> ApiError {
        let resource = qualified(group, plural);
        ApiError::new(
            403,
            "Forbidden",
            format!("{resource} \"{name}\" is forbidden: {why}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 on a stale resourceVersion.
    pub fn conflict(group: &str, plural: &str, name: &str) -> ApiError {
        let resource = qualified(group, plural);
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 for a server-side apply that would change fields other managers own.
    pub fn apply_conflict(
        group: &str,
        plural: &str,
        name: &str,
        conflicts: &[super::managed_fields::Conflict],
    ) -> ApiError {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
            .collect();
        ApiError::new(
            409,
            "Conflict",
            super::managed_fields::conflict_message(conflicts),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural, "causes": causes}))
    }

    /// 413 for a body over the size limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 401 without a valid bearer token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 422 naming each bad field.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let summary: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.cause_reason(), "message": e.message, "field": e.field}))
            .collect();
        let message = format!(
            "{kind}.{group} \"{name}\" is invalid: {}",
            summary.join(", ")
        );
        ApiError::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 405; `allow` lists the methods the path takes (`GET, POST`).
    pub fn method_not_allowed(message: impl Into<String>, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(405, "MethodNotAllowed", message)
        }
    }

    /// 415.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (not {content_type})"
            ),
        )
    }

    /// 410 Expired, for watches from a compacted revision.
    pub fn expired(revision: i64, oldest: i64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {revision} ({oldest})"),
        )
    }

    /// 429: every watch slot is taken ([`crate::Limits::max_watches`]).
    pub fn too_many_watches() -> ApiError {
        ApiError::new(
            429,
            "TooManyRequests",
            "too many watches are open on this server; retry later",
        )
        .with_details(json!({"retryAfterSeconds": 1}))
    }

    /// 500 without internals.
    pub fn internal(what: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %what, "API server internal error");
        ApiError::new(
            500,
            "InternalError",
            "an internal error occurred; see the server log",
        )
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// Whether this is a write that lost a race with another (see `From<StorageError>`).
    pub fn is_race(&self) -> bool {
        self.code == 409 && self.reason == "Conflict" && self.details.is_none()
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, self.status().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.code == 429 {
            // As Kubernetes answers 429: clients (client-go, kube-rs) wait this long.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// A resource as Kubernetes names it in messages: `plural.group`, or `plural` in the core group.
fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

impl From<super::storage::StorageError> for ApiError {
    fn from(error: super::storage::StorageError) -> Self {
        match error {
            // A lost race: a 409 without details, which writers without a precondition of
            // their own retry ([`ApiError::is_race`]).
            super::storage::StorageError::Precondition { key } => ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {key}: the object has been modified; please apply your changes to the latest version and try again"
                ),
            ),
            super::storage::StorageError::Compacted { revision, oldest } => {
                ApiError::expired(revision, oldest)
            }
            other => ApiError::internal(other),
        }
    }
}

/// A selector that does not parse: 400, its message as it names the broken part.
impl From<super::selectors::SelectorError> for ApiError {
    fn from(error: super::selectors::SelectorError) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

/// A CRD whose kind cannot be served: 400.
impl From<super::registry::CrdError> for ApiError {
    fn from(error: super::registry::CrdError) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

/// A JSON patch that cannot be applied: 422.
impl From<super::patch::PatchError> for ApiError {
    fn from(error: super::patch::PatchError) -> Self {
        ApiError::new(422, "Invalid", error.to_string())
    }
}
