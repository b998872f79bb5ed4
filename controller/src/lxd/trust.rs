//! Trust bootstrap: a client redeems a trust token (`lxc config trust add` output) to have its
//! own certificate trusted, so no one copies certificates by hand.

use base64::Engine;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::{Call, ClientConfig, Endpoint, LxdClient};
use super::error::{LxdError, Result};
use super::tls::{ClientIdentity, ServerTrust};

/// A decoded trust token: base64 JSON naming the issuing member's addresses and the cluster
/// certificate's fingerprint (which is what the client pins while redeeming).
#[derive(Debug, Clone, Deserialize)]
pub struct TrustToken {
    /// The name the certificate is trusted under.
    #[serde(default)]
    pub client_name: String,
    /// SHA-256 of the cluster certificate.
    pub fingerprint: String,
    /// `host:port` of the member that issued the token: redeem it there, as another member
    /// burns the token and fails.
    pub addresses: Vec<String>,
    /// When it stops being valid.
    #[serde(default)]
    pub expires_at: String,
    #[serde(skip)]
    encoded: String,
}

impl TrustToken {
    /// Reads a token as `lxc config trust add` prints it.
    pub fn decode(token: &str) -> Result<TrustToken> {
        let encoded = token.trim().to_owned();
        let bad = |why: String| LxdError::Config {
            message: format!("not an LXD trust token: {why}"),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&encoded))
            .map_err(|e| bad(e.to_string()))?;
        let mut decoded: TrustToken =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if decoded.addresses.is_empty() {
            return Err(bad("it names no member address".to_owned()));
        }
        decoded.encoded = encoded;
        Ok(decoded)
    }

    /// The issuing member's endpoints, `https://host:port`.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>> {
        self.addresses
            .iter()
            .map(|address| Endpoint::parse(&format!("https://{address}")))
            .collect()
    }
}

/// What redeeming a token came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustOutcome {
    /// The certificate is trusted now.
    Trusted,
    /// It was trusted already; the token was not used.
    AlreadyTrusted,
}

/// Redeems `token` with `identity`'s certificate at the member that issued it. The server is
/// pinned to the token's fingerprint unless `trust` says otherwise.
pub async fn redeem(
    token: &TrustToken,
    identity: ClientIdentity,
    trust: Option<ServerTrust>,
) -> Result<TrustOutcome> {
    let trust = match trust {
        Some(trust) => trust,
        None => ServerTrust::from_fingerprint(&token.fingerprint)?,
    };
    let client = LxdClient::new(ClientConfig::new(token.endpoints()?, Some(identity), trust))?;
    if client.server_info().await?.is_trusted() {
        return Ok(TrustOutcome::AlreadyTrusted);
    }
    // The certificate is the one presented on this connection; `password` carries the token.
    let body = json!({"type": "client", "password": token.encoded});
    let call = Call::new(Method::POST, "/1.0/certificates").json(&body)?;
    match client.send(call).await {
        Ok(_) => Ok(TrustOutcome::Trusted),
        Err(LxdError::AlreadyExists { .. }) => Ok(TrustOutcome::AlreadyTrusted),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_the_issuing_member_and_the_fingerprint_to_pin() {
        let json = r#"{"client_name":"op","fingerprint":"cd0ef433e9c6bba409bc34b796aef71d6172f8cd3e827186bf151fc13ec0607b","addresses":["127.0.0.2:8443"],"secret":"s","expires_at":"0001-01-01T00:00:00Z"}"#;
        let token =
            TrustToken::decode(&base64::engine::general_purpose::STANDARD.encode(json)).unwrap();
        assert_eq!(
            token.endpoints().unwrap(),
            [Endpoint::Https {
                host: "127.0.0.2".into(),
                port: 8443
            }]
        );
        assert_eq!(token.client_name, "op");
        assert!(
            TrustToken::decode("not a token")
                .unwrap_err()
                .to_string()
                .contains("not an LXD trust token")
        );
    }
}
