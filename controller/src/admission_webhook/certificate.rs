//! The webhook's serving certificate, read again when its files change: a renewed Secret
//! reaches the pod's mount without a restart (kubelet swaps the files in place), and the API
//! server trusts the new certificate as soon as its caBundle names the new CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::WebhookError;

/// The TLS configuration serving the certificate in `cert` (PEM, its chain after it) with the
/// key in `key` (PEM), as they are at each handshake.
pub(super) fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCertificate::load(cert, key, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate and key files, and what was read of them last.
#[derive(Debug)]
struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// The files' latest modification time when they were read.
    modified: Option<SystemTime>,
    certified: Arc<CertifiedKey>,
}

impl ReloadingCertificate {
    fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCertificate, WebhookError> {
        let modified = modified(cert, key);
        let certified = Arc::new(read(cert, key, &provider)?);
        Ok(ReloadingCertificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: Mutex::new(Loaded {
                modified,
                certified,
            }),
        })
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let modified = modified(&self.cert, &self.key);
        if modified != current.modified {
            // A pair caught halfway through its renewal fails to read or match: the previous
            // one is served until both files are new.
            match read(&self.cert, &self.key, &self.provider) {
                Ok(certified) => {
                    tracing::info!(cert = %self.cert.display(), "admission webhook: serving certificate read again");
                    *current = Loaded {
                        modified,
                        certified: Arc::new(certified),
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, "admission webhook: the changed serving certificate cannot be used yet; serving the previous one");
                }
            }
        }
        Some(current.certified.clone())
    }
}

/// The later modification time of the two files (through symbolic links, as a mounted
/// Secret's files are).
fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    time(cert).max(time(key))
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, WebhookError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| WebhookError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let pem_error = |path: &Path| {
        let path = path.to_owned();
        move |source| WebhookError::Pem { path, source }
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(cert))?;
    if chain.is_empty() {
        return Err(pem_error(cert)(rustls_pki_types::pem::Error::NoItemsFound));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(pem_error(key))?;
    CertifiedKey::from_der(chain, key, provider).map_err(WebhookError::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_file_without_a_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let error = tls_config(&cert, &key).unwrap_err().to_string();
        assert!(error.contains("tls.crt"), "{error}");
        let error = tls_config(&dir.path().join("missing"), &key)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("cannot read"), "{error}");
    }
}
