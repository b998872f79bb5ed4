//! What placement decides on: the container's request and a snapshot of the cluster's members.
//! Plain data, filled by the controller from LXD and the API; no I/O here.

use std::collections::BTreeMap;

use lxd_operator_crds::container::Placement;

/// CPU and memory, requested or available.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    /// CPU cores.
    pub cpu: f64,
    /// Memory in bytes.
    pub memory: f64,
}

/// What scoring counts for a container or instance that asks for nothing (no limit): as
/// Kubernetes' non-zero defaults, so that containers without limits still spread.
pub const SCORING_DEFAULT: Resources = Resources {
    cpu: 0.1,
    memory: 256.0 * 1024.0 * 1024.0,
};

impl Resources {
    /// Each dimension that is zero replaced by [`SCORING_DEFAULT`]'s.
    pub fn or_scoring_default(self) -> Resources {
        Resources {
            cpu: if self.cpu > 0.0 {
                self.cpu
            } else {
                SCORING_DEFAULT.cpu
            },
            memory: if self.memory > 0.0 {
                self.memory
            } else {
                SCORING_DEFAULT.memory
            },
        }
    }

    /// Adds `other`.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu: self.cpu + other.cpu,
            memory: self.memory + other.memory,
        }
    }
}

/// One cluster member as placement sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Member {
    /// Member name.
    pub name: String,
    /// LXD's status: `Online`, `Offline`, `Evacuated`, ...
    pub status: String,
    /// CPU architecture.
    pub architecture: String,
    /// Failure domain.
    pub failure_domain: String,
    /// Cluster groups.
    pub groups: Vec<String>,
    /// Labels (from `user.*` member config).
    pub labels: BTreeMap<String, String>,
    /// What the member has.
    pub capacity: Resources,
    /// What every instance on it is limited to (ours or not), plus reservations.
    pub allocated: Resources,
    /// Instances (and reservations) without a CPU limit, and without a memory limit: scoring
    /// counts [`SCORING_DEFAULT`] for each.
    pub unlimited: (u32, u32),
    /// What its instances actually use now (from LXD's metrics).
    pub usage: Resources,
    /// 1-minute load average, where LXD reports it.
    pub load1: Option<f64>,
    /// Instances on it, ours or not, plus reservations.
    pub instances: u32,
    /// Cordoned in the LxdCluster's spec: it takes no new containers.
    pub cordoned: bool,
}

/// A container already placed (or reserved), for affinity and spreading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placed {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The member it is on.
    pub member: String,
}

/// The cluster at the moment of a decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Every member.
    pub members: Vec<Member>,
    /// The operator's containers, placed or reserved.
    pub placed: Vec<Placed>,
}

impl Snapshot {
    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Counts `request` as placed on `member`: its resources allocated there, one instance
    /// more, and the container among the placed ones (for affinity and spreading).
    pub fn land(&mut self, member: &str, request: &Request) {
        if let Some(target) = self.members.iter_mut().find(|m| m.name == member) {
            target.allocated = target.allocated.plus(request.resources);
            target.instances += 1;
            target.unlimited.0 += u32::from(request.resources.cpu <= 0.0);
            target.unlimited.1 += u32::from(request.resources.memory <= 0.0);
        }
        self.placed.push(Placed {
            namespace: request.namespace.clone(),
            name: request.name.clone(),
            labels: request.labels.clone(),
            member: member.to_owned(),
        });
    }

    /// The failure domain of a member (its name when unknown).
    pub fn failure_domain_of(&self, member: &str) -> String {
        self.member(member)
            .map(|m| m.failure_domain.clone())
            .unwrap_or_else(|| member.to_owned())
    }
}

/// The container to place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// What it asks for.
    pub resources: Resources,
    /// The architecture its image needs, if known.
    pub architecture: Option<String>,
    /// Its placement spec.
    pub placement: Placement,
}

impl Member {
    /// What scoring counts as allocated: the limits, plus the scoring default for each instance
    /// without one.
    pub fn scoring_allocated(&self) -> Resources {
        Resources {
            cpu: self.allocated.cpu + f64::from(self.unlimited.0) * SCORING_DEFAULT.cpu,
            memory: self.allocated.memory + f64::from(self.unlimited.1) * SCORING_DEFAULT.memory,
        }
    }
}
