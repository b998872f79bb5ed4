//! What makes the embedded API server safe to expose: a CA made on first start (kept in the
//! data folder, handed to clients in the kubeconfig), a serving certificate it signs at every
//! start for the addresses the server answers on, and a bearer token every request must carry.
//!
//! Files in the data folder: `pki/ca.crt`, `pki/ca.key` and `token` (mode 0600), and the
//! `kubeconfig` (0600: it holds the token).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::status::ApiError;

/// Why the server's credentials cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file in the data folder.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Making or reading a certificate or key.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The TLS configuration.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The server's CA, serving certificate and token.
#[derive(Clone)]
pub struct Credentials {
    /// The CA certificate (PEM): what clients trust.
    pub ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Arc<Vec<u8>>,
    /// The bearer token clients send.
    pub token: Arc<str>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Option<String>, SecurityError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecurityError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), SecurityError> {
    let mut file = open_private(path, true)?;
    let error = |source| SecurityError::File {
        path: path.to_owned(),
        source,
    };
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

/// Makes `path` a file only its owner can read, if it is not one yet; its contents stay.
pub fn create_private(path: &Path) -> Result<(), SecurityError> {
    open_private(path, false).map(drop)
}

/// Opens `path` for writing (`truncate`: emptied), created with mode 0600 (and its folders
/// 0700) when missing, narrowed to 0600 when it was wider.
fn open_private(path: &Path, truncate: bool) -> Result<std::fs::File, SecurityError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let error = |source| SecurityError::File {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(error)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    // An older file keeps its mode on open: narrow it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(error)?;
    Ok(file)
}

/// The CA's parameters; the same at every start, so a CA read back from disk signs as the
/// one that was made.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "lxd-operator embedded API server CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_token() -> String {
    // Two v4 UUIDs: 244 random bits from the operating system.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Credentials {
    /// Reads the CA and token from `data_dir`, making them on first start, and signs a serving
    /// certificate for `localhost`, the loopback addresses and `listen`.
    pub fn load_or_create(data_dir: &Path, listen: IpAddr) -> Result<Credentials, SecurityError> {
        let ca_cert_path = data_dir.join("pki/ca.crt");
        let ca_key_path = data_dir.join("pki/ca.key");
        let token_path = data_dir.join("token");
        let (ca_pem, ca_key) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
            (Some(cert), Some(key)) => (cert, KeyPair::from_pem(&key)?),
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params().self_signed(&key)?;
                write_private(&ca_key_path, &key.serialize_pem())?;
                write_private(&ca_cert_path, &cert.pem())?;
                (cert.pem(), key)
            }
        };
        let token = match read(&token_path)? {
            Some(token) if !token.trim().is_empty() => token.trim().to_owned(),
            _ => {
                let token = random_token();
                write_private(&token_path, &token)?;
                token
            }
        };
        let issuer = Issuer::new(ca_params(), ca_key);
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if !listen.is_unspecified() && !listen.is_loopback() {
            names.push(listen.to_string());
        }
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "lxd-operator embedded API server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = params.signed_by(&server_key, &issuer)?;
        Ok(Credentials {
            ca_pem,
            server_cert: server_cert.der().clone(),
            server_key: Arc::new(server_key.serialize_der()),
            token: token.into(),
        })
    }

    /// The TLS configuration serving the certificate (HTTP/1.1).
    pub fn tls_config(&self) -> Result<rustls::ServerConfig, SecurityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.to_vec()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Paths anyone may read, as a Kubernetes API server lets `system:public-info-viewer` do.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// Compares without leaking, through timing, how much of the token was right.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Middleware: 401 unless the request carries `Authorization: Bearer <token>`.
pub async fn require_token(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let authorized = given.is_some_and(|given| same_token(given.as_bytes(), token.as_bytes()));
    if authorized || is_public(request.uri().path()) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_and_token_are_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = Credentials::load_or_create(dir.path(), "127.0.0.1".parse().unwrap()).unwrap();
        let second = Credentials::load_or_create(dir.path(), "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.token, second.token);
        assert_eq!(first.token.len(), 64);
        for file in ["pki/ca.key", "pki/ca.crt", "token"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        first.tls_config().unwrap();
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
    }
}
