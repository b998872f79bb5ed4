//! Calls about the cluster and its members: server info, members, capacity, live usage.

use super::client::{Call, LxdClient};
use super::error::{LxdError, Result};
use super::metrics::{InstanceMetrics, parse_instance_metrics};
use super::types::{
    ClusterGroup, ClusterMember, MemberState, Resources, ServerInfo, StoragePoolResources,
};

impl LxdClient {
    /// `GET /1.0`: answers untrusted clients too (with `auth: untrusted`).
    pub async fn server_info(&self) -> Result<ServerInfo> {
        self.fetch(Call::get("/1.0")).await
    }

    /// Checks that the cluster answers and trusts this client: an untrusted client gets
    /// [`LxdError::Untrusted`] here rather than a 403 on its first real call.
    pub async fn ensure_trusted(&self) -> Result<ServerInfo> {
        let info = self.server_info().await?;
        if !info.is_trusted() {
            return Err(LxdError::Untrusted {
                message: format!(
                    "LXD answers but does not trust this client certificate (auth: {}); add it with `lxc config trust add` or `lxd-operator lxd trust --token ...`",
                    info.auth
                ),
            });
        }
        Ok(info)
    }

    /// Every cluster member. A standalone LXD (not clustered) is reported as one member named
    /// after the server, Online.
    pub async fn members(&self) -> Result<Vec<ClusterMember>> {
        match self
            .fetch::<Vec<ClusterMember>>(Call::get("/1.0/cluster/members").query("recursion", "1"))
            .await
        {
            Ok(members) if !members.is_empty() => {
                self.inner
                    .routes
                    .learn(&members, &self.inner.config.endpoints);
                Ok(members)
            }
            Ok(_) | Err(LxdError::NotFound { .. }) | Err(LxdError::Invalid { .. }) => {
                let info = self.server_info().await?;
                Ok(vec![ClusterMember {
                    server_name: if info.environment.server_name.is_empty() {
                        "none".to_owned()
                    } else {
                        info.environment.server_name
                    },
                    status: "Online".to_owned(),
                    message: "Standalone LXD server".to_owned(),
                    ..ClusterMember::default()
                }])
            }
            Err(error) => Err(error),
        }
    }

    /// CPUs and memory of one member (`target` is ignored by a standalone LXD).
    pub async fn member_resources(&self, member: &str) -> Result<Resources> {
        self.fetch(Call::get("/1.0/resources").query("target", member))
            .await
    }

    /// Space and inodes of a storage pool on one member.
    pub async fn storage_pool_resources(
        &self,
        pool: &str,
        member: &str,
    ) -> Result<StoragePoolResources> {
        self.fetch(
            Call::get(format!(
                "/1.0/storage-pools/{}/resources",
                path_segment(pool)
            ))
            .query("target", member),
        )
        .await
    }

    /// Load averages and memory of one member, where the LXD version offers member state
    /// (`None` on LXD 5.0.2, which answers 501 Not Implemented; remembered so it is asked only once).
    pub async fn member_state(&self, member: &str) -> Result<Option<MemberState>> {
        if self
            .inner
            .member_state_supported
            .lock()
            .ok()
            .and_then(|s| *s)
            == Some(false)
        {
            return Ok(None);
        }
        let call = Call::get(format!(
            "/1.0/cluster/members/{}/state",
            path_segment(member)
        ));
        match self.fetch::<MemberState>(call).await {
            Ok(state) => {
                self.remember_member_state_support(true);
                Ok(Some(state))
            }
            Err(LxdError::Unsupported { .. }) => {
                self.remember_member_state_support(false);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    fn remember_member_state_support(&self, supported: bool) {
        if let Ok(mut known) = self.inner.member_state_supported.lock() {
            *known = Some(supported);
        }
    }

    /// CPU and memory used by each instance on one member, from that member's `/1.0/metrics`
    /// (a member reports only its own instances; `target` forwards the call to it).
    pub async fn member_instance_metrics(&self, member: &str) -> Result<Vec<InstanceMetrics>> {
        let answer = self
            .send_raw(Call::get("/1.0/metrics").query("target", member))
            .await?;
        Ok(parse_instance_metrics(&answer))
    }

    /// Cluster groups with their members.
    pub async fn cluster_groups(&self) -> Result<Vec<ClusterGroup>> {
        self.fetch(Call::get("/1.0/cluster/groups").query("recursion", "1"))
            .await
    }
}

/// A name as one URL path segment (LXD names have no `/`, but aliases may).
pub(crate) fn path_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
