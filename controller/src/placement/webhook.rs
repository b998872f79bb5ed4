//! The webhook extender's protocol (bring your own strategy). For each decision the operator
//! POSTs a [`WebhookRequest`] as JSON to the policy's webhook; the webhook answers a
//! [`WebhookResponse`]: members to leave out (with a reason) and/or scores from 0 to 100, which
//! are added with the webhook's weight. Members the webhook does not mention keep their scores
//! (and get 0 from the webhook when it scores others).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::Member;

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    /// Not a URL at all.
    #[error("{url:?} is not a URL: {reason}")]
    Unreadable { url: String, reason: String },
    /// Plain HTTP to another host: the decision, and what it tells of the cluster, would
    /// cross the network unprotected, to a server that proves nothing about itself.
    #[error(
        "{url}: http:// is allowed only to the operator's own host (127.0.0.0/8, ::1, localhost); use https://"
    )]
    PlainHttpElsewhere { url: String },
    /// Another scheme.
    #[error("{url}: the scheme must be https:// (or http:// to the operator's own host)")]
    Scheme { url: String },
}

/// Checks a webhook URL: `https://` to any host, `http://` only to a loopback host.
pub fn check_url(text: &str) -> Result<(), WebhookUrlError> {
    let url = url::Url::parse(text).map_err(|error| WebhookUrlError::Unreadable {
        url: shown_url(text),
        reason: error.to_string(),
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(WebhookUrlError::PlainHttpElsewhere {
            url: shown_url(text),
        }),
        _ => Err(WebhookUrlError::Scheme {
            url: shown_url(text),
        }),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => IpAddr::V4(address).is_loopback(),
        Some(url::Host::Ipv6(address)) => IpAddr::V6(address).is_loopback(),
        None => false,
    }
}

/// A webhook URL as logs, Events and status may show it: without its user and password.
pub fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("redacted");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => text.to_owned(),
        // Unreadable: whatever stands before an `@` may be a secret.
        Err(_) => match text.rsplit_once('@') {
            Some((_, host)) => format!("redacted@{host}"),
            None => text.to_owned(),
        },
    }
}

/// What the operator sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRequest {
    /// The container.
    pub container: WebhookContainer,
    /// The members that passed the built-in filters, with their figures.
    pub members: Vec<WebhookMember>,
    /// The built-in weighted score of each of them.
    pub scores: BTreeMap<String, f64>,
}

/// The container, as the webhook sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookContainer {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Requested CPU cores.
    pub cpu: f64,
    /// Requested memory, bytes.
    pub memory_bytes: f64,
}

/// A member, as the webhook sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMember {
    /// Name.
    pub name: String,
    /// Failure domain.
    pub failure_domain: String,
    /// Cluster groups.
    pub groups: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// CPUs.
    pub cpu_capacity: f64,
    /// Memory, bytes.
    pub memory_capacity_bytes: f64,
    /// CPU requested by instances there.
    pub cpu_allocated: f64,
    /// Memory requested by instances there, bytes.
    pub memory_allocated_bytes: f64,
    /// Instances there.
    pub instances: u32,
    /// CPU requested by the Pods on the member's Kubernetes Node (absent when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cpu_requested_by_pods: f64,
    /// Memory requested by the Pods on the member's Kubernetes Node, bytes (absent when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_requested_by_pods_bytes: f64,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

impl From<&Member> for WebhookMember {
    fn from(member: &Member) -> Self {
        WebhookMember {
            name: member.name.clone(),
            failure_domain: member.failure_domain.clone(),
            groups: member.groups.clone(),
            labels: member.labels.clone(),
            cpu_capacity: member.capacity.cpu,
            memory_capacity_bytes: member.capacity.memory,
            cpu_allocated: member.allocated.cpu,
            memory_allocated_bytes: member.allocated.memory,
            instances: member.instances,
            cpu_requested_by_pods: member.pods.cpu,
            memory_requested_by_pods_bytes: member.pods.memory,
        }
    }
}

/// What the webhook answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResponse {
    /// Members to leave out, with the reason (shown in the explanation).
    #[serde(default)]
    pub filtered: BTreeMap<String, String>,
    /// Scores from 0 to 100 by member.
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_goes_anywhere_and_plain_http_only_to_the_operators_own_host() {
        for allowed in [
            "https://scores.example.com/score",
            "http://127.0.0.1:9000/score",
            "http://127.8.9.1/score",
            "http://[::1]:9000/score",
            "http://localhost:9000/score",
        ] {
            assert_eq!(check_url(allowed), Ok(()), "{allowed}");
        }
        assert_eq!(
            check_url("http://user:secret@10.0.0.5/score"),
            Err(WebhookUrlError::PlainHttpElsewhere {
                url: "http://redacted@10.0.0.5/score".to_owned()
            })
        );
        assert!(matches!(
            check_url("ftp://127.0.0.1/score"),
            Err(WebhookUrlError::Scheme { .. })
        ));
        assert!(matches!(
            check_url("https://"),
            Err(WebhookUrlError::Unreadable { .. })
        ));
    }

    #[test]
    fn userinfo_never_shows() {
        assert_eq!(
            shown_url("https://bot:hunter2@scores.example.com/score?x=1"),
            "https://redacted@scores.example.com/score?x=1"
        );
        assert_eq!(
            shown_url("https://scores.example.com/score"),
            "https://scores.example.com/score"
        );
        assert_eq!(shown_url("https://bot:hun ter2@x y"), "redacted@x y");
    }
}
