//! Calls that form a cluster and change its membership, as `lxd init` does on each host but
//! from one remote client: bootstrap, join tokens, the joiner's server certificate, the join
//! itself, member settings (failure domain, groups, `user.*` labels), storage pools, removal.
//! The recipe, with LXD 5.0's own error messages, is in the LXD API notes of the project.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{Call, LxdClient};
use super::cluster::path_segment;
use super::error::{LxdError, Result};
use super::types::ClusterMember;

/// How long forming steps may take (a join takes about 2 s here; it copies the cluster
/// database). A step that takes longer is looked at again by the next reconcile.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /1.0/cluster`: whether the server is clustered, and what a joiner must set per member.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterInfo {
    /// The server's name in the cluster.
    pub server_name: String,
    /// Whether clustering is enabled.
    pub enabled: bool,
}

/// What a joiner needs, as `PUT /1.0/cluster` on it takes it.
#[derive(Debug, Clone, Serialize)]
pub struct JoinRequest {
    /// The joiner's member name.
    pub server_name: String,
    /// The joiner's own `host:port`.
    pub server_address: String,
    /// Always true.
    pub enabled: bool,
    /// `host:port` of a member of the cluster.
    pub cluster_address: String,
    /// The cluster certificate, PEM.
    pub cluster_certificate: String,
    /// The join token (base64 JSON), issued by the cluster for this name.
    pub cluster_token: String,
    /// Per-member settings of the cluster's storage pools.
    pub member_config: Vec<MemberConfigEntry>,
}

/// One per-member key a join sets (`{"entity":"storage-pool","name":"local","key":"source"}`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberConfigEntry {
    /// `storage-pool` (or `network`).
    pub entity: String,
    /// The pool's name.
    pub name: String,
    /// The key: `source`, ...
    pub key: String,
    /// Its value on the joiner.
    pub value: String,
}

/// The writable part of a cluster member (`PUT /1.0/cluster/members/<name>`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberSettings {
    /// Roles, sent back as they are.
    pub roles: Vec<String>,
    /// Failure domain.
    pub failure_domain: String,
    /// Description.
    pub description: String,
    /// Member config (`scheduler.instance`, `user.*`).
    pub config: BTreeMap<String, String>,
    /// Cluster groups.
    pub groups: Vec<String>,
}

impl MemberSettings {
    /// The settings a member has now.
    pub fn of(member: &ClusterMember) -> Self {
        MemberSettings {
            roles: member.roles.clone(),
            failure_domain: member.failure_domain.clone(),
            description: String::new(),
            config: member.config.clone(),
            groups: member.groups.clone(),
        }
    }
}

impl LxdClient {
    /// `GET /1.0/cluster` of the answering server.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        self.fetch(Call::get("/1.0/cluster")).await
    }

    /// Makes the answering (unclustered) server a cluster of one, named `server_name`. LXD
    /// makes a new cluster certificate for it: connections already open keep the old one.
    pub async fn bootstrap_cluster(&self, server_name: &str) -> Result<()> {
        let call = Call::new(Method::PUT, "/1.0/cluster")
            .json(&json!({"server_name": server_name, "enabled": true}))?;
        let handle = self.start_operation(call).await?;
        self.wait(&handle, MEMBERSHIP_TIMEOUT).await?;
        Ok(())
    }

    /// A join token for `server_name`, issued by the cluster. A token still pending for that
    /// name (from a join that never happened) is revoked first: LXD issues one per name.
    pub async fn join_token(&self, server_name: &str) -> Result<String> {
        self.revoke_join_tokens(server_name).await?;
        let call = Call::new(Method::POST, "/1.0/cluster/members")
            .json(&json!({"server_name": server_name}))?;
        let handle = self.start_operation(call).await?;
        let metadata = &handle.operation.metadata;
        let token = json!({
            "server_name": server_name,
            "fingerprint": metadata["fingerprint"],
            "addresses": metadata["addresses"],
            "secret": metadata["secret"],
            "expires_at": metadata["expiresAt"],
        });
        if metadata["secret"].as_str().unwrap_or_default().is_empty() {
            return Err(LxdError::UnexpectedResponse {
                endpoint: String::new(),
                status: 202,
                detail: "a join token operation without a secret".to_owned(),
                body: handle.operation.metadata.to_string(),
            });
        }
        Ok(base64::engine::general_purpose::STANDARD.encode(token.to_string()))
    }

    /// Revokes every pending join token issued for `server_name`.
    pub async fn revoke_join_tokens(&self, server_name: &str) -> Result<()> {
        for operation in self.operations().await? {
            if operation.class == "token"
                && !operation.is_done()
                && operation.metadata["serverName"] == server_name
            {
                let call = Call::new(Method::DELETE, format!("/1.0/operations/{}", operation.id));
                match self.send(call).await {
                    Ok(_) | Err(LxdError::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Trusts a joiner's server certificate (PEM) on the cluster, as `lxd init` does on the
    /// joiner with its own key before it joins. Already trusted is fine.
    pub async fn trust_server_certificate(&self, name: &str, certificate_pem: &str) -> Result<()> {
        let der_base64: String = certificate_pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let call = Call::new(Method::POST, "/1.0/certificates")
            .json(&json!({"type": "server", "name": name, "certificate": der_base64}))?;
        match self.send(call).await {
            Ok(_) | Err(LxdError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Has the answering (unclustered) server join the cluster the request names.
    pub async fn join_cluster(&self, request: &JoinRequest) -> Result<()> {
        let call = Call::new(Method::PUT, "/1.0/cluster").json(request)?;
        let handle = self.start_operation(call).await?;
        self.wait(&handle, MEMBERSHIP_TIMEOUT).await?;
        Ok(())
    }

    /// Sets a member's failure domain, config and groups.
    pub async fn update_cluster_member(&self, name: &str, settings: &MemberSettings) -> Result<()> {
        let call = Call::new(
            Method::PUT,
            format!("/1.0/cluster/members/{}", path_segment(name)),
        )
        .json(settings)?;
        self.send(call).await?;
        Ok(())
    }

    /// Makes a cluster group unless it exists.
    pub async fn ensure_cluster_group(&self, name: &str) -> Result<()> {
        let call = Call::new(Method::POST, "/1.0/cluster/groups")
            .json(&json!({"name": name, "description": "made by lxd-operator"}))?;
        match self.send(call).await {
            Ok(_) | Err(LxdError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Removes a member from the cluster (it must hold no instances).
    pub async fn remove_cluster_member(&self, name: &str) -> Result<()> {
        let call = Call::new(
            Method::DELETE,
            format!("/1.0/cluster/members/{}", path_segment(name)),
        );
        match self.send(call).await {
            Ok(_) | Err(LxdError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Names of the storage pools.
    pub async fn storage_pool_names(&self) -> Result<Vec<String>> {
        let pools: Vec<serde_json::Value> = self
            .fetch(Call::get("/1.0/storage-pools").query("recursion", "1"))
            .await?;
        Ok(pools
            .iter()
            .filter_map(|pool| pool["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Makes a storage pool on a cluster of one (the bootstrapped server), as `lxd init` does.
    pub async fn create_storage_pool(
        &self,
        name: &str,
        driver: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<()> {
        let call = Call::new(Method::POST, "/1.0/storage-pools")
            .json(&json!({"name": name, "driver": driver, "config": config}))?;
        match self.send(call).await {
            Ok(_) | Err(LxdError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Puts the default profile's root disk on `pool` unless it has a root disk already.
    pub async fn ensure_default_root_disk(&self, pool: &str) -> Result<()> {
        let profile: serde_json::Value = self.fetch(Call::get("/1.0/profiles/default")).await?;
        let has_root = profile["devices"].as_object().is_some_and(|devices| {
            devices
                .values()
                .any(|device| device["type"] == "disk" && device["path"] == "/")
        });
        if has_root {
            return Ok(());
        }
        let call = Call::new(Method::PATCH, "/1.0/profiles/default")
            .json(&json!({"devices": {"root": {"type": "disk", "path": "/", "pool": pool}}}))?;
        self.send(call).await?;
        Ok(())
    }
}
