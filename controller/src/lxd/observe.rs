//! What the members of a cluster have, hold and do, read in one go: the one observation that
//! both an LxdCluster's status and placement are made from, so that `kubectl get lxdcl` and a
//! placement decision count the same instances the same way.

use std::collections::HashSet;

use super::client::LxdClient;
use super::error::Result;
use super::types::{ClusterMember, Instance, InstanceLimits, Resources, UID_KEY};

/// What a set of instances on a member is limited to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Allocation {
    /// CPU cores of their limits.
    pub cpu: f64,
    /// Bytes of their memory limits.
    pub memory_bytes: u64,
    /// How many instances.
    pub instances: u32,
    /// How many of them have no CPU limit.
    pub without_cpu_limit: u32,
    /// How many of them have no memory limit.
    pub without_memory_limit: u32,
}

impl Allocation {
    fn add(&mut self, limits: InstanceLimits) {
        self.cpu += limits.cpu.unwrap_or(0.0);
        self.memory_bytes = self
            .memory_bytes
            .saturating_add(limits.memory_bytes.unwrap_or(0));
        self.instances = self.instances.saturating_add(1);
        self.without_cpu_limit += u32::from(limits.cpu.is_none());
        self.without_memory_limit += u32::from(limits.memory_bytes.is_none());
    }
}

/// One member as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberObservation {
    /// The member as LXD lists it.
    pub member: ClusterMember,
    /// Its CPUs and memory (`None` when offline or unreadable).
    pub resources: Option<Resources>,
    /// What every instance on it is limited to, ours or not.
    pub allocated: Allocation,
    /// What the operator's own instances on it are limited to.
    pub managed: Allocation,
    /// Bytes of memory its instances use (LXD's metrics, reused for a while: [`super::usage`]).
    pub instance_memory_used_bytes: f64,
    /// 1, 5 and 15 minute load averages, where the LXD version reports them.
    pub load_averages: Vec<f64>,
}

impl MemberObservation {
    /// Whether LXD lists it Online.
    pub fn is_online(&self) -> bool {
        self.member.status == "Online"
    }
}

/// Every member of a cluster as observed, and the owner uids of the instances LXD showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObservation {
    /// Members, in LXD's order.
    pub members: Vec<MemberObservation>,
    /// `user.lxd-operator.uid` of every instance seen.
    pub owner_uids: HashSet<String>,
}

impl LxdClient {
    /// Reads every member, what its instances are limited to and its live figures; each online
    /// member's figures at once, not one member after another.
    pub async fn observe_members(&self) -> Result<ClusterObservation> {
        let (members, instances) = futures::try_join!(self.members(), self.instances())?;
        let members = futures::future::join_all(
            members
                .into_iter()
                .map(|member| self.observe_member(member, &instances)),
        )
        .await;
        let owner_uids = instances
            .iter()
            .filter_map(|i| i.owner_uid().map(str::to_owned))
            .collect();
        Ok(ClusterObservation {
            members,
            owner_uids,
        })
    }

    async fn observe_member(
        &self,
        member: ClusterMember,
        instances: &[Instance],
    ) -> MemberObservation {
        let (resources, usage, state) = if member.status == "Online" {
            let name = &member.server_name;
            // Each member answers for itself, rather than one member forwarding for all.
            let own = self.on_member(name);
            let (resources, usage, state) = futures::join!(
                own.member_resources(name),
                own.member_usage(name),
                own.member_state(name),
            );
            (
                resources.ok(),
                usage.unwrap_or_default(),
                state.ok().flatten(),
            )
        } else {
            (None, Default::default(), None)
        };
        let mut allocated = Allocation::default();
        let mut managed = Allocation::default();
        for instance in instances.iter().filter(|i| i.is_on(&member.server_name)) {
            let limits = instance.limits(resources.as_ref());
            allocated.add(limits);
            if instance.config.contains_key(UID_KEY) {
                managed.add(limits);
            }
        }
        MemberObservation {
            member,
            resources,
            allocated,
            managed,
            instance_memory_used_bytes: usage.iter().map(|m| m.memory_used_bytes).sum(),
            load_averages: state.map(|s| s.sysinfo.load_averages).unwrap_or_default(),
        }
    }
}
