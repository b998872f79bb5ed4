//! What LXD sends and receives, limited to the fields the operator uses. Unknown fields are
//! ignored and missing ones take their defaults, so newer LXD versions read the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::quantity::{CpuAllowance, CpuLimit, MemoryLimit};

/// LXD sends `null` for empty lists and maps in places; read it as empty.
fn null_as_empty<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An operation's resources, whose lists may be null.
fn resources_of<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let lists: BTreeMap<String, Option<Vec<String>>> = null_as_empty(deserializer)?;
    Ok(lists
        .into_iter()
        .map(|(kind, paths)| (kind, paths.unwrap_or_default()))
        .collect())
}

/// `GET /1.0`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    /// `trusted` or `untrusted`.
    pub auth: String,
    /// API extensions the server supports.
    #[serde(deserialize_with = "null_as_empty")]
    pub api_extensions: Vec<String>,
    /// The server's environment.
    pub environment: ServerEnvironment,
}

/// The `environment` of `GET /1.0`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerEnvironment {
    /// Whether the server is a member of a cluster.
    pub server_clustered: bool,
    /// The answering member's name.
    pub server_name: String,
    /// LXD's version, e.g. `5.0.2`.
    pub server_version: String,
    /// SHA-256 of the server (cluster) certificate.
    pub certificate_fingerprint: String,
    /// The server (cluster) certificate, PEM.
    pub certificate: String,
}

impl ServerInfo {
    /// Whether the client is trusted.
    pub fn is_trusted(&self) -> bool {
        self.auth == "trusted"
    }
}

/// One cluster member, from `GET /1.0/cluster/members?recursion=1`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ClusterMember {
    /// Member name.
    pub server_name: String,
    /// API address, `https://host:port`.
    pub url: String,
    /// Roles (database, database-leader, event-hub, ...).
    #[serde(deserialize_with = "null_as_empty")]
    pub roles: Vec<String>,
    /// `Online`, `Offline`, `Evacuated`, `Blocked`, ...
    pub status: String,
    /// LXD's words about the status.
    pub message: String,
    /// CPU architecture.
    pub architecture: String,
    /// Failure domain.
    pub failure_domain: String,
    /// Member configuration (`scheduler.instance`, `user.*`, ...).
    #[serde(deserialize_with = "null_as_empty")]
    pub config: BTreeMap<String, String>,
    /// Cluster groups.
    #[serde(deserialize_with = "null_as_empty")]
    pub groups: Vec<String>,
}

impl ClusterMember {
    /// Its labels: the `user.*` keys of its config, without `user.`.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix("user.")
                    .map(|label| (label.to_owned(), value.clone()))
            })
            .collect()
    }
}

/// `GET /1.0/resources`: the parts placement needs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Resources {
    /// CPUs.
    pub cpu: CpuResources,
    /// Memory.
    pub memory: MemoryResources,
}

/// CPU resources of a member.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct CpuResources {
    /// Logical CPUs (threads).
    pub total: u32,
}

/// Memory of a member (host-wide: members sharing a host report the same figures).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemoryResources {
    /// Bytes in total.
    pub total: u64,
    /// Bytes in use.
    pub used: u64,
}

/// `GET /1.0/storage-pools/<pool>/resources`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct StoragePoolResources {
    /// Disk space.
    pub space: UsedTotal,
    /// Inodes.
    pub inodes: UsedTotal,
}

/// A used/total pair.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct UsedTotal {
    /// In use.
    pub used: u64,
    /// In total.
    pub total: u64,
}

/// `GET /1.0/cluster/members/<name>/state` (LXD 5.x after 5.0.2; absent in 5.0.2).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemberState {
    /// System information of the member.
    pub sysinfo: MemberSysinfo,
}

/// The `sysinfo` of a member's state.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemberSysinfo {
    /// 1, 5 and 15 minute load averages.
    #[serde(deserialize_with = "null_as_empty")]
    pub load_averages: Vec<f64>,
    /// Free RAM, bytes.
    pub freeram: u64,
    /// Total RAM, bytes.
    pub totalram: u64,
    /// Processes.
    pub processes: u64,
}

/// A cluster group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterGroup {
    /// Group name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Member names.
    #[serde(deserialize_with = "null_as_empty")]
    pub members: Vec<String>,
}

/// An instance, from `GET /1.0/instances/<name>` or a recursive list.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Instance {
    /// Name.
    pub name: String,
    /// `Running`, `Stopped`, `Frozen`, `Error`, ...
    pub status: String,
    /// LXD's status code (103 running, 102 stopped, 110 frozen).
    pub status_code: u16,
    /// The member it is on.
    pub location: String,
    /// The LXD project it is in.
    pub project: String,
    /// `container` or `virtual-machine`.
    #[serde(rename = "type")]
    pub instance_type: String,
    /// Its own configuration (without what profiles add).
    #[serde(deserialize_with = "null_as_empty")]
    pub config: BTreeMap<String, String>,
    /// Its own devices.
    #[serde(deserialize_with = "null_as_empty")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    /// Configuration with profiles applied.
    #[serde(deserialize_with = "null_as_empty")]
    pub expanded_config: BTreeMap<String, String>,
    /// Devices with profiles applied.
    #[serde(deserialize_with = "null_as_empty")]
    pub expanded_devices: BTreeMap<String, BTreeMap<String, String>>,
    /// Profiles, in order.
    #[serde(deserialize_with = "null_as_empty")]
    pub profiles: Vec<String>,
    /// Whether it is deleted when it stops.
    pub ephemeral: bool,
    /// Architecture.
    pub architecture: String,
    /// Description.
    pub description: String,
    /// Whether stateful stop is enabled.
    pub stateful: bool,
    /// Runtime state, with `recursion=2` or from `GET .../state`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<InstanceState>,
}

/// The config key that ties an instance to the custom resource that owns it.
pub const UID_KEY: &str = "user.lxd-operator.uid";
/// How the names of LXD's move copies begin (`lxd-move-of-<uuid>`).
pub const MOVE_COPY_PREFIX: &str = "lxd-move-of-";

/// What an instance holds of its member, as placement and the cluster's status count it.
/// `None`: no limit, or one only the host's size tells when that is unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InstanceLimits {
    /// CPU cores.
    pub cpu: Option<f64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

impl Instance {
    /// Its limits with profiles applied, in every form LXD accepts (`limits.memory` in LXD's
    /// units or as a percentage of `host`; `limits.cpu` as a count or a set of cores, refined
    /// by `limits.cpu.allowance`). A value LXD would refuse counts as no limit.
    pub fn limits(&self, host: Option<&Resources>) -> InstanceLimits {
        let config = if self.expanded_config.is_empty() {
            &self.config
        } else {
            &self.expanded_config
        };
        let host_cpus = host
            .map(|h| f64::from(h.cpu.total))
            .filter(|cpus| *cpus > 0.0);
        let limited_cpus = config
            .get("limits.cpu")
            .and_then(|text| CpuLimit::parse(text).ok())
            .map(|limit| limit.cpus() as f64)
            .filter(|cpus| *cpus > 0.0);
        let allowance = config
            .get("limits.cpu.allowance")
            .and_then(|text| CpuAllowance::parse(text).ok());
        let cpu = match (allowance, limited_cpus.or(host_cpus)) {
            (Some(allowance), Some(cpus)) => Some(allowance.cores(cpus)),
            _ => limited_cpus,
        };
        let memory_bytes = match config
            .get("limits.memory")
            .and_then(|text| MemoryLimit::parse(text).ok())
        {
            Some(MemoryLimit::Bytes(bytes)) => Some(bytes),
            Some(share) => host
                .map(|h| h.memory.total)
                .filter(|total| *total > 0)
                .map(|total| share.bytes(total)),
            None => None,
        };
        InstanceLimits {
            cpu: cpu.filter(|cores| *cores > 0.0),
            memory_bytes: memory_bytes.filter(|bytes| *bytes > 0),
        }
    }

    /// Whether it is on `member`: its location, or any member of a standalone server (whose
    /// instances have no location, or `none`).
    pub fn is_on(&self, member: &str) -> bool {
        self.location == member || self.location.is_empty() || self.location == "none"
    }

    /// The uid of the custom resource that created it, if the operator did.
    pub fn owner_uid(&self) -> Option<&str> {
        self.config.get(UID_KEY).map(String::as_str)
    }

    /// Whether this is the copy LXD 5.0 makes on the destination while it moves an instance
    /// between members: the copy (config included) is made under a name of LXD's own, then the
    /// original is deleted and the copy renamed to the original's name, all in one operation.
    pub fn is_move_copy(&self) -> bool {
        self.name.starts_with(MOVE_COPY_PREFIX)
    }

    /// Whether it has a network interface (its own or from a profile): without one it has no
    /// addresses to read.
    pub fn has_nic(&self) -> bool {
        self.expanded_devices
            .values()
            .chain(self.devices.values())
            .any(|device| device.get("type").is_some_and(|t| t == "nic"))
    }

    /// Whether it is running (frozen counts as not running).
    pub fn is_running(&self) -> bool {
        self.status_code == 103 || self.status == "Running"
    }

    /// The writable part, for `PUT /1.0/instances/<name>`.
    pub fn to_put(&self) -> InstancePut {
        InstancePut {
            config: self.config.clone(),
            devices: self.devices.clone(),
            profiles: self.profiles.clone(),
            ephemeral: self.ephemeral,
            description: self.description.clone(),
            architecture: self.architecture.clone(),
            stateful: self.stateful,
        }
    }
}

/// `GET /1.0/instances/<name>/state`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct InstanceState {
    /// `Running`, `Stopped`, `Frozen`, ...
    pub status: String,
    /// LXD's status code.
    pub status_code: u16,
    /// PID of init, when running.
    pub pid: i64,
    /// Process count.
    pub processes: i64,
    /// CPU usage.
    pub cpu: CpuUsage,
    /// Memory usage.
    pub memory: MemoryUsage,
    /// Network interfaces by name.
    pub network: Option<BTreeMap<String, NetworkState>>,
}

/// CPU time an instance used.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CpuUsage {
    /// Nanoseconds.
    pub usage: i64,
}

/// Memory an instance uses.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct MemoryUsage {
    /// Bytes.
    pub usage: i64,
}

/// One network interface of an instance.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NetworkState {
    /// Its addresses.
    #[serde(deserialize_with = "null_as_empty")]
    pub addresses: Vec<NetworkAddress>,
}

/// One address of an interface.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NetworkAddress {
    /// `inet` or `inet6`.
    pub family: String,
    /// The address.
    pub address: String,
    /// `global`, `link`, `local`.
    pub scope: String,
}

impl InstanceState {
    /// Global addresses of every interface but loopback, IPv4 first in interface order.
    pub fn addresses(&self, family: &str) -> Vec<String> {
        self.network
            .iter()
            .flatten()
            .filter(|(name, _)| name.as_str() != "lo")
            .flat_map(|(_, interface)| interface.addresses.iter())
            .filter(|address| address.family == family && address.scope == "global")
            .map(|address| address.address.clone())
            .collect()
    }
}

/// The writable part of an instance (`PUT /1.0/instances/<name>`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct InstancePut {
    /// Configuration.
    #[serde(deserialize_with = "null_as_empty")]
    pub config: BTreeMap<String, String>,
    /// Devices.
    #[serde(deserialize_with = "null_as_empty")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    /// Profiles.
    #[serde(deserialize_with = "null_as_empty")]
    pub profiles: Vec<String>,
    /// Ephemeral.
    pub ephemeral: bool,
    /// Description.
    pub description: String,
    /// Architecture.
    pub architecture: String,
    /// Stateful.
    pub stateful: bool,
}

/// `POST /1.0/instances`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InstanceCreate {
    /// Name.
    pub name: String,
    /// `container`.
    #[serde(rename = "type")]
    pub instance_type: String,
    /// The image.
    pub source: InstanceSource,
    /// Profiles; LXD applies `default` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<String>>,
    /// Configuration.
    #[serde(deserialize_with = "null_as_empty")]
    pub config: BTreeMap<String, String>,
    /// Devices.
    #[serde(deserialize_with = "null_as_empty")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    /// Ephemeral.
    pub ephemeral: bool,
    /// Description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl InstanceCreate {
    /// The instance this request creates on `member`, as it stands right after the create
    /// (stopped), without what LXD adds itself (`volatile.*` and `image.*` keys, what profiles
    /// expand to).
    pub fn as_created(&self, member: &str) -> Instance {
        Instance {
            name: self.name.clone(),
            status: "Stopped".to_owned(),
            status_code: 102,
            location: member.to_owned(),
            instance_type: self.instance_type.clone(),
            config: self.config.clone(),
            devices: self.devices.clone(),
            profiles: self
                .profiles
                .clone()
                .unwrap_or_else(|| vec!["default".to_owned()]),
            ephemeral: self.ephemeral,
            description: self.description.clone(),
            ..Instance::default()
        }
    }
}

/// Where an instance's root file system comes from.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InstanceSource {
    /// `image`.
    #[serde(rename = "type")]
    pub source_type: String,
    /// Image alias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Image fingerprint (or a unique prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl InstanceSource {
    /// A local image by alias.
    pub fn alias(alias: &str) -> Self {
        InstanceSource {
            source_type: "image".to_owned(),
            alias: Some(alias.to_owned()),
            fingerprint: None,
        }
    }

    /// A local image by fingerprint.
    pub fn fingerprint(fingerprint: &str) -> Self {
        InstanceSource {
            source_type: "image".to_owned(),
            alias: None,
            fingerprint: Some(fingerprint.to_owned()),
        }
    }
}

/// Where to create an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// LXD's own choice.
    Any,
    /// This member.
    Member(String),
    /// Any member of this cluster group.
    Group(String),
}

/// A state change, `PUT /1.0/instances/<name>/state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateAction {
    /// Start.
    Start,
    /// Stop (gracefully unless forced).
    Stop,
    /// Restart.
    Restart,
    /// Freeze.
    Freeze,
    /// Unfreeze.
    Unfreeze,
}

impl StateAction {
    /// The status an instance has once the action is done.
    pub fn resulting_status(self) -> &'static str {
        match self {
            StateAction::Start | StateAction::Restart | StateAction::Unfreeze => "Running",
            StateAction::Stop => "Stopped",
            StateAction::Freeze => "Frozen",
        }
    }
}

/// The body of a state change.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StateChange {
    pub(crate) action: StateAction,
    /// Seconds to wait for a graceful stop; -1 waits forever.
    pub(crate) timeout: i64,
    pub(crate) force: bool,
    pub(crate) stateful: bool,
}

/// An operation, from an async answer or `GET /1.0/operations/<id>`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Operation {
    /// Its id.
    pub id: String,
    /// `task`, `websocket`, `token`.
    pub class: String,
    /// What it does.
    pub description: String,
    /// `Running`, `Success`, `Failure`, `Cancelled`, ...
    pub status: String,
    /// LXD's status code (103 running, 200 success, 400 failure, 401 cancelled).
    pub status_code: u16,
    /// The error of a failed operation.
    pub err: String,
    /// The member that runs it.
    pub location: String,
    /// What it acts on: `{"instances": ["/1.0/instances/x"]}` (a bootstrap's is
    /// `{"cluster": null}`).
    #[serde(deserialize_with = "resources_of")]
    pub resources: BTreeMap<String, Vec<String>>,
    /// Operation-specific data (a token's secret, ...).
    pub metadata: Value,
}

impl Operation {
    /// Whether it has ended, one way or the other.
    pub fn is_done(&self) -> bool {
        self.status_code >= 200
            || matches!(self.status.as_str(), "Success" | "Failure" | "Cancelled")
    }

    /// Whether it is still running and acts on the instance `name`.
    pub fn runs_on_instance(&self, name: &str) -> bool {
        let suffix = format!("/instances/{name}");
        !self.is_done()
            && self.resources.get("instances").is_some_and(|paths| {
                paths
                    .iter()
                    .any(|path| path.split('?').next().is_some_and(|p| p.ends_with(&suffix)))
            })
    }
}

/// An image in the image store.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Image {
    /// SHA-256.
    pub fingerprint: String,
    /// Aliases.
    #[serde(deserialize_with = "null_as_empty")]
    pub aliases: Vec<ImageAliasRef>,
    /// Architecture.
    pub architecture: String,
    /// Size in bytes.
    pub size: u64,
    /// Properties (os, release, description, ...).
    #[serde(deserialize_with = "null_as_empty")]
    pub properties: BTreeMap<String, String>,
}

/// An alias named by an image.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ImageAliasRef {
    /// Alias name.
    pub name: String,
}

/// `GET /1.0/images/aliases/<name>`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ImageAlias {
    /// Alias name.
    pub name: String,
    /// The fingerprint it points at.
    pub target: String,
}

/// A profile.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Configuration.
    #[serde(deserialize_with = "null_as_empty")]
    pub config: BTreeMap<String, String>,
    /// Devices.
    #[serde(deserialize_with = "null_as_empty")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_with_null_resource_lists_reads_and_matches_instances_by_whole_name() {
        let bootstrap: Operation = serde_json::from_str(
            r#"{"id":"1","status":"Running","status_code":103,"resources":{"cluster":null}}"#,
        )
        .unwrap();
        assert!(!bootstrap.runs_on_instance("web"));
        let moving: Operation = serde_json::from_str(
            r#"{"id":"2","status":"Running","status_code":103,"resources":{"instances":["/1.0/instances/web?project=default"]}}"#,
        )
        .unwrap();
        assert!(moving.runs_on_instance("web"));
        assert!(!moving.runs_on_instance("eb"));
        let done = Operation {
            status_code: 200,
            ..moving
        };
        assert!(!done.runs_on_instance("web"));
    }
}
