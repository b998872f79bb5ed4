//! A placement policy's webhook over HTTP: the engine builds the request and applies the answer
//! ([`crate::placement::webhook`]); this sends it. One HTTP client per CA bundle is kept and
//! reused, so that a decision does not pay for a new client (and its TLS set-up) every time.
//! Redirects are not followed (a webhook that moved must be named anew, not send decisions on
//! to wherever it points), and a URL shows in errors without its user and password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lxd_operator_crds::policy::WebhookExtender;
use rustls_pki_types::pem::PemObject;

use crate::placement::webhook::{WebhookRequest, WebhookResponse, shown_url};

/// Why a webhook call failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The policy's `caBundle` holds no readable certificate.
    #[error("caBundle: {0}")]
    CaBundle(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The HTTP client could not be built.
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request was not answered (refused, timed out, TLS failed).
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The webhook answered with an error status.
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    /// The answer is not the JSON the webhook protocol describes.
    #[error("{url}: unreadable answer: {source}")]
    Answer {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// HTTP clients for webhooks, by CA bundle (empty: none given, so the system's roots).
#[derive(Debug, Default)]
pub struct WebhookClients {
    by_ca_bundle: Mutex<HashMap<String, reqwest::Client>>,
}

impl WebhookClients {
    /// Sends `body` to the webhook and reads its answer.
    pub async fn call(
        &self,
        webhook: &WebhookExtender,
        body: &WebhookRequest,
    ) -> Result<WebhookResponse, WebhookError> {
        let url = &shown_url(&webhook.url);
        let response = self
            .client(webhook.ca_bundle.as_ref())?
            .post(&webhook.url)
            .timeout(Duration::from_millis(u64::from(webhook.timeout_millis)))
            .json(body)
            .send()
            .await
            .map_err(|source| WebhookError::Request {
                url: url.clone(),
                source: source.without_url(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(WebhookError::Status {
                url: url.clone(),
                status,
            });
        }
        response
            .json::<WebhookResponse>()
            .await
            .map_err(|source| WebhookError::Answer {
                url: url.clone(),
                source: source.without_url(),
            })
    }

    fn client(&self, ca_bundle: Option<&String>) -> Result<reqwest::Client, WebhookError> {
        let key = ca_bundle.map_or("", String::as_str);
        if let Some(client) = self
            .by_ca_bundle
            .lock()
            .ok()
            .and_then(|clients| clients.get(key).cloned())
        {
            return Ok(client);
        }
        let client = build_client(ca_bundle)?;
        if let Ok(mut clients) = self.by_ca_bundle.lock() {
            clients.insert(key.to_owned(), client.clone());
        }
        Ok(client)
    }
}

fn build_client(ca_bundle: Option<&String>) -> Result<reqwest::Client, WebhookError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle {
        Some(bundle) => {
            for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(bundle.as_bytes()) {
                let certificate = certificate.map_err(|e| WebhookError::CaBundle(Box::new(e)))?;
                roots
                    .add(certificate)
                    .map_err(|e| WebhookError::CaBundle(Box::new(e)))?;
            }
        }
        None => {
            // The system's roots, as the CRD promises; a certificate the system cannot read is
            // left out rather than failing every webhook.
            let system = rustls_native_certs::load_native_certs();
            for error in &system.errors {
                tracing::warn!(%error, "a system root certificate cannot be read");
            }
            let (added, ignored) = roots.add_parsable_certificates(system.certs);
            tracing::debug!(added, ignored, "system roots loaded for placement webhooks");
            if roots.is_empty() {
                tracing::warn!(
                    "no system root certificates: an https webhook without caBundle cannot be verified"
                );
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(WebhookError::Tls)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(WebhookError::Client)
}
