//! The errors of the LXD client: one variant for each case the controller acts on differently.

use std::time::Duration;

/// What went wrong talking to LXD. Every variant keeps LXD's own message verbatim.
#[derive(Debug, thiserror::Error)]
pub enum LxdError {
    /// The thing asked for does not exist (instance, image, alias, member, profile, ...).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// Creating something that already exists (an instance of that name).
    #[error("already exists: {message}")]
    AlreadyExists { message: String },
    /// The object changed since it was read: an `If-Match` ETag no longer matches (HTTP 412).
    #[error("conflict (the object changed since it was read): {message}")]
    Conflict { message: String },
    /// LXD refused the request as invalid (bad name, unknown config key, bad limit value, ...).
    #[error("invalid request: {message}")]
    Invalid { message: String },
    /// LXD does not trust the client certificate (or it lacks the permission).
    #[error("not trusted by LXD: {message}")]
    Untrusted { message: String },
    /// No member could be reached or every member answered that it is unavailable.
    #[error("LXD unavailable: {message}")]
    Unavailable { message: String },
    /// The call did not finish in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout { what: String, after: Duration },
    /// The operation is gone (finished long ago, or its member stopped answering): what it did
    /// must be read from the instance itself.
    #[error("operation {id} was lost: {message}")]
    OperationLost { id: String, message: String },
    /// This LXD version does not offer what was asked (HTTP 501), e.g. member state on 5.0.2.
    #[error("not supported by this LXD: {message}")]
    Unsupported { message: String },
    /// The operation ran and failed, with LXD's reason.
    #[error("operation failed: {message}")]
    OperationFailed { message: String },
    /// The server certificate is not the pinned one, or TLS failed otherwise.
    #[error("TLS failure talking to {endpoint}: {message}")]
    Tls { endpoint: String, message: String },
    /// LXD answered something the client cannot read; quotes what came back.
    #[error("unexpected answer from {endpoint} ({status}): {detail}; body: {body}")]
    UnexpectedResponse {
        endpoint: String,
        status: u16,
        detail: String,
        body: String,
    },
    /// The client's own configuration is wrong (bad endpoint URL, unreadable certificate, ...).
    #[error("LXD client configuration: {message}")]
    Config { message: String },
    /// This replica no longer holds the leader lease: it changes nothing more.
    #[error("not the leader: {message}")]
    NotLeader { message: String },
}

/// Result of LXD client calls.
pub type Result<T, E = LxdError> = std::result::Result<T, E>;

impl LxdError {
    /// Classifies an error LXD reported, by its HTTP-like status code and its message. LXD
    /// reports some mistakes with a code that does not say what they are (a missing profile is a
    /// 500; a failed operation is always 400), so the message decides where it is unambiguous.
    pub fn from_lxd(code: u16, message: &str) -> LxdError {
        let message = message.to_owned();
        let lower = message.to_ascii_lowercase();
        // A member that is down or just restarting: LXD reports these as 500s.
        if lower.contains("missing event connection")
            || lower.contains("connection refused")
            || lower.contains("failed to connect")
            || lower.contains("is offline")
            || lower.contains("no route to host")
        {
            return LxdError::Unavailable { message };
        }
        if lower.contains("already exists") || lower.contains("already trusted") {
            return LxdError::AlreadyExists { message };
        }
        if lower.contains("not found")
            || lower.contains("doesn't exist")
            || lower.contains("does not exist")
        {
            return LxdError::NotFound { message };
        }
        if lower.contains("etag doesn't match") {
            return LxdError::Conflict { message };
        }
        if lower.contains("invalid")
            || lower.contains("unknown configuration key")
            || lower.contains("failed parsing")
        {
            return LxdError::Invalid { message };
        }
        match code {
            400 => LxdError::Invalid { message },
            403 => LxdError::Untrusted { message },
            404 => LxdError::NotFound { message },
            409 => LxdError::AlreadyExists { message },
            412 => LxdError::Conflict { message },
            501 => LxdError::Unsupported { message },
            502..=504 => LxdError::Unavailable { message },
            _ => LxdError::OperationFailed { message },
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LxdError::NotFound { .. } => "not_found",
            LxdError::AlreadyExists { .. } => "already_exists",
            LxdError::Conflict { .. } => "conflict",
            LxdError::Invalid { .. } => "invalid",
            LxdError::Untrusted { .. } => "untrusted",
            LxdError::Unavailable { .. } => "unavailable",
            LxdError::Timeout { .. } => "timeout",
            LxdError::OperationLost { .. } => "operation_lost",
            LxdError::Unsupported { .. } => "unsupported",
            LxdError::OperationFailed { .. } => "operation_failed",
            LxdError::Tls { .. } => "tls",
            LxdError::UnexpectedResponse { .. } => "unexpected_response",
            LxdError::Config { .. } => "config",
            LxdError::NotLeader { .. } => "not_leader",
        }
    }

    /// Whether trying again later (or elsewhere) may succeed without any change of input.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LxdError::Unavailable { .. }
                | LxdError::Timeout { .. }
                | LxdError::OperationLost { .. }
                | LxdError::Conflict { .. }
                | LxdError::NotLeader { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lxd_5_0_sends_map_to_the_variant_the_controller_needs() {
        let cases = [
            (404, "Image alias not found", "not_found"),
            (404, "Cluster member not found", "not_found"),
            (500, "Requested profile \"nope\" doesn't exist", "not_found"),
            (
                400,
                "Invalid instance name: Name must not start with a number",
                "invalid",
            ),
            (
                400,
                "Failed creating instance record: Unknown configuration key: foo.bar",
                "invalid",
            ),
            (
                400,
                "Failed creating instance record: Invalid value: lots",
                "invalid",
            ),
            (
                500,
                "Invalid config: Unknown configuration key: foo.bar",
                "invalid",
            ),
            (
                400,
                "Failed creating instance record: Add instance info to the database: This \"instances\" entry already exists",
                "already_exists",
            ),
            (412, "ETag doesn't match: d22e vs stale", "conflict"),
            (403, "not authorized", "untrusted"),
            (400, "Instance is running", "invalid"),
            (500, "Failed to start the container", "operation_failed"),
            (503, "Cluster member is offline", "unavailable"),
            (501, "not implemented", "unsupported"),
            (
                500,
                "Missing event connection with target cluster member",
                "unavailable",
            ),
            (
                500,
                "Failed to connect to cluster member: dial tcp 127.0.0.2:8443: connect: connection refused",
                "unavailable",
            ),
        ];
        for (code, message, label) in cases {
            assert_eq!(
                LxdError::from_lxd(code, message).metric_label(),
                label,
                "{code} {message}"
            );
        }
    }
}
