//! TLS towards LXD: the client certificate the operator presents, and verification of the
//! server by pinning its certificate.
//!
//! Every member of an LXD cluster serves the same self-signed cluster certificate, whose
//! subjectAltName names only the first member's address, so hostname verification fails on
//! every other member. Pinning the certificate itself (its SHA-256) is what LXD's own client
//! does; the handshake signature is still checked with rustls' verification, so only the holder
//! of the pinned certificate's key can pass.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::error::{LxdError, Result};

/// How the server's certificate is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// The SHA-256 of the server certificate's DER must be this.
    Pinned([u8; 32]),
    /// It must be one of these: a server that is joining a cluster serves its own certificate
    /// before and the cluster's after.
    PinnedOneOf(Vec<[u8; 32]>),
    /// Any certificate is accepted: development only, and logged as a warning.
    InsecureSkipVerify,
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTrust::Pinned(fingerprint) => {
                write!(f, "Pinned(sha256:{})", hex::encode(fingerprint))
            }
            ServerTrust::PinnedOneOf(fingerprints) => {
                let hex: Vec<String> = fingerprints.iter().map(hex::encode).collect();
                write!(f, "PinnedOneOf(sha256:{})", hex.join(","))
            }
            ServerTrust::InsecureSkipVerify => f.write_str("InsecureSkipVerify"),
        }
    }
}

impl ServerTrust {
    /// Pins the certificate given in PEM.
    pub fn from_certificate_pem(pem: &[u8]) -> Result<Self> {
        let certificate = CertificateDer::from_pem_slice(pem).map_err(|e| LxdError::Config {
            message: format!("server certificate is not a PEM certificate: {e}"),
        })?;
        Ok(ServerTrust::Pinned(fingerprint_of(&certificate)))
    }

    /// Pins a fingerprint written as 64 hex digits, optionally `sha256:`-prefixed or with
    /// colons between the bytes.
    pub fn from_fingerprint(text: &str) -> Result<Self> {
        let digits: String = text
            .trim()
            .trim_start_matches("sha256:")
            .trim_start_matches("SHA256:")
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let bytes = hex::decode(&digits)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| LxdError::Config {
                message: format!("server fingerprint {text:?} is not 64 hex digits (a SHA-256)"),
            })?;
        Ok(ServerTrust::Pinned(bytes))
    }
}

/// The SHA-256 of a certificate's DER encoding: what LXD calls its fingerprint.
pub fn fingerprint_of(certificate: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(certificate.as_ref()).into()
}

/// The client certificate chain and key, from PEM (the key as PKCS#8, SEC1 or PKCS#1).
#[derive(Debug)]
pub struct ClientIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientIdentity {
    /// Reads a certificate (chain) and private key in PEM.
    pub fn from_pem(certificate: &[u8], key: &[u8]) -> Result<Self> {
        let chain = CertificateDer::pem_slice_iter(certificate)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| LxdError::Config {
                message: format!("client certificate is not PEM: {e}"),
            })?;
        if chain.is_empty() {
            return Err(LxdError::Config {
                message: "client certificate PEM holds no certificate".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| LxdError::Config {
            message: format!("client key is not a PEM private key: {e}"),
        })?;
        Ok(ClientIdentity { chain, key })
    }

    /// The SHA-256 fingerprint of the client certificate, as LXD lists trusted certificates.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|c| hex::encode(fingerprint_of(c)))
            .unwrap_or_default()
    }

    /// The client certificate in PEM, as `POST /1.0/certificates` wants it.
    pub fn certificate_base64_der(&self) -> String {
        use base64::Engine;
        self.chain
            .first()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c.as_ref()))
            .unwrap_or_default()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration that presents `identity` (if any) and checks the server as
/// `trust` says. `alpn` lists the protocols offered: HTTP/2 and 1.1 for REST calls; none for
/// the events websocket, whose upgrade fails when h2 is negotiated.
pub fn client_config(
    identity: Option<&ClientIdentity>,
    trust: &ServerTrust,
    alpn: &[&[u8]],
) -> Result<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        trust: trust.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LxdError::Config {
            message: format!("TLS setup: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| LxdError::Config {
                message: format!("client certificate and key do not fit together: {e}"),
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[derive(Debug)]
struct PinnedVerifier {
    trust: ServerTrust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            ServerTrust::InsecureSkipVerify => Ok(ServerCertVerified::assertion()),
            ServerTrust::Pinned(expected) if fingerprint_of(end_entity) == *expected => {
                Ok(ServerCertVerified::assertion())
            }
            ServerTrust::PinnedOneOf(expected)
                if expected.contains(&fingerprint_of(end_entity)) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            ServerTrust::Pinned(_) | ServerTrust::PinnedOneOf(_) => Err(
                rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_in_every_usual_spelling() {
        let hex64 = "cd0ef433e9c6bba409bc34b796aef71d6172f8cd3e827186bf151fc13ec0607b";
        let expected = ServerTrust::from_fingerprint(hex64).unwrap();
        assert_eq!(
            ServerTrust::from_fingerprint(&format!("sha256:{hex64}")).unwrap(),
            expected
        );
        let colons: Vec<String> = hex64
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
            .collect();
        assert_eq!(
            ServerTrust::from_fingerprint(&colons.join(":")).unwrap(),
            expected
        );
    }

    #[test]
    fn a_short_fingerprint_is_a_configuration_error_that_says_what_is_expected() {
        let error = ServerTrust::from_fingerprint("abcd").unwrap_err();
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }
}
