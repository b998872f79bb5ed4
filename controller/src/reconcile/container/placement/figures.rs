//! The members as placement sees them: the cluster's observation ([`crate::lxd::observe`], the
//! same the LxdCluster's status is made from) turned into the engine's [`Member`]s, read once
//! per burst and reused for a few seconds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::lxd::observe::{ClusterObservation, MemberObservation};
use crate::lxd::{LxdClient, LxdError};
use crate::placement::model::{Member, Resources, Snapshot};

/// How long member figures read from LXD are reused. They change slowly, and decisions made
/// since are counted by the reservations; reading them for every decision of a burst would make
/// placement, which is serialized, the bottleneck of a rollout.
const FIGURES_FOR: Duration = Duration::from_secs(10);

/// The members as last read, and the owner uids LXD showed then.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// The members (no placed containers: those come from the API).
    pub snapshot: Snapshot,
    /// Owner uids of every instance seen: reservations of those are no longer needed.
    pub visible: HashSet<String>,
}

impl From<&ClusterObservation> for Figures {
    fn from(observation: &ClusterObservation) -> Self {
        Figures {
            snapshot: Snapshot::new(observation.members.iter().map(member_of).collect()),
            visible: observation.owner_uids.clone(),
        }
    }
}

fn member_of(observed: &MemberObservation) -> Member {
    let member = &observed.member;
    let allocated = &observed.allocated;
    Member {
        name: member.server_name.clone(),
        status: member.status.clone(),
        architecture: member.architecture.clone(),
        failure_domain: if member.failure_domain.is_empty() {
            "default".to_owned()
        } else {
            member.failure_domain.clone()
        },
        groups: member.groups.clone(),
        labels: member.labels(),
        capacity: observed
            .resources
            .as_ref()
            .map_or_else(Resources::default, |r| Resources {
                cpu: f64::from(r.cpu.total),
                memory: r.memory.total as f64,
            }),
        // From the Pods on the member's Kubernetes Node, set by the decision that uses these
        // figures (they change apart from LXD's).
        pods: Resources::default(),
        unlimited: (allocated.without_cpu_limit, allocated.without_memory_limit),
        allocated: Resources {
            cpu: allocated.cpu,
            memory: allocated.memory_bytes as f64,
        },
        usage: Resources {
            cpu: 0.0,
            memory: observed.instance_memory_used_bytes,
        },
        load1: observed.load_averages.first().copied(),
        instances: allocated.instances,
        // From the LxdCluster's spec, set by the decision that uses these figures.
        cordoned: false,
    }
}

/// Figures of one cluster, read at most once per [`FIGURES_FOR`].
#[derive(Debug, Default)]
pub struct FiguresCache {
    /// Held while the figures are read, so that a burst reads them once, not once per
    /// container.
    last: tokio::sync::Mutex<Option<(Instant, Figures)>>,
}

impl FiguresCache {
    /// Fresh figures: the last read if recent, else read now.
    pub async fn get(&self, client: &LxdClient) -> Result<Figures, LxdError> {
        let mut last = self.last.lock().await;
        if let Some((read, figures)) = last.as_ref()
            && read.elapsed() < FIGURES_FOR
        {
            return Ok(figures.clone());
        }
        let figures = Figures::from(&client.observe_members().await?);
        *last = Some((Instant::now(), figures.clone()));
        Ok(figures)
    }
}
