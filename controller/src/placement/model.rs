//! What placement decides on: the container's request and a snapshot of the cluster's members.
//! Plain data, filled by the controller from LXD and the API; no I/O here.

use std::collections::{BTreeMap, HashMap};

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
    /// What the Pods bound to the Kubernetes Node on the member's host request (zero when the
    /// member has no Node mapped): held beside `allocated` by the capacity filter and scorers.
    pub pods: Resources,
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

/// The cluster at the moment of a decision: the members, and the operator's containers placed
/// on them, with the indexes a decision reads instead of going through every container.
///
/// Built with [`Snapshot::new`] and grown with [`Snapshot::add_placed`] or [`Snapshot::land`],
/// so that the counts of placed containers per member stay current as decisions land: a
/// decision then costs what the number of members costs, whatever the number of containers.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    members: Vec<Member>,
    placed: Vec<Placed>,
    index: Index,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        // The index is derived from these two.
        self.members == other.members && self.placed == other.placed
    }
}

/// The domains of one topology key: each member's domain (none when the member lacks the key)
/// and each domain's name, by domain number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Domains {
    /// Per member (in snapshot order), its domain's number.
    pub of_member: Vec<Option<u32>>,
    /// Per domain number, its value (`zone=a`: `a`).
    pub names: Vec<String>,
}

impl Domains {
    /// Numbers the distinct values `value_of` gives the members, in order of first appearance.
    fn number<'m>(
        members: &'m [Member],
        value_of: impl Fn(&'m Member) -> Option<&'m str>,
    ) -> Domains {
        let mut numbers: HashMap<&str, u32> = HashMap::new();
        let mut domains = Domains::default();
        for member in members {
            let number = value_of(member).map(|value| {
                *numbers.entry(value).or_insert_with(|| {
                    domains.names.push(value.to_owned());
                    (domains.names.len() - 1) as u32
                })
            });
            domains.of_member.push(number);
        }
        domains
    }

    /// The domain of the member at `index`.
    pub fn of(&self, index: usize) -> Option<u32> {
        self.of_member.get(index).copied().flatten()
    }

    /// The name of domain `number`.
    pub fn name(&self, number: u32) -> &str {
        self.names.get(number as usize).map_or("", String::as_str)
    }
}

/// Placed containers of one namespace that carry exactly the same labels (the containers of a
/// set, typically): affinity and spreading match selectors against a group's labels once, not
/// against every container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacedGroup {
    /// Their namespace.
    pub namespace: String,
    /// Their labels.
    pub labels: BTreeMap<String, String>,
    /// How many are on each member, by member index (members the snapshot does not know are
    /// not here).
    pub per_member: HashMap<usize, u32>,
    /// How many there are, on known members or not.
    pub total: u32,
}

/// What the snapshot keeps beside its members and containers, current as containers are added.
#[derive(Debug, Clone, Default)]
struct Index {
    /// Member index by name.
    member_by_name: HashMap<String, usize>,
    /// The members' failure domains.
    failure_domains: Domains,
    /// The domains of each member label key.
    label_domains: HashMap<String, Domains>,
    /// Placed containers grouped by namespace and labels.
    groups: Vec<PlacedGroup>,
    /// Group number by namespace, then labels (two levels, so that a lookup borrows its keys
    /// instead of building an owned pair).
    group_by_labels: HashMap<String, HashMap<BTreeMap<String, String>, usize>>,
    /// Per placed container (by namespace, then name): its position in `placed` and its group.
    placed_by_name: HashMap<String, HashMap<String, (usize, usize)>>,
}

impl Snapshot {
    /// A snapshot of `members`, with no containers placed yet.
    pub fn new(members: Vec<Member>) -> Snapshot {
        let mut label_domains = HashMap::new();
        let keys: std::collections::BTreeSet<&String> =
            members.iter().flat_map(|m| m.labels.keys()).collect();
        for key in keys {
            label_domains.insert(
                key.clone(),
                Domains::number(&members, |m| m.labels.get(key).map(String::as_str)),
            );
        }
        let index = Index {
            member_by_name: members
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.clone(), i))
                .collect(),
            failure_domains: Domains::number(&members, |m| Some(m.failure_domain.as_str())),
            label_domains,
            ..Index::default()
        };
        Snapshot {
            members,
            placed: Vec::new(),
            index,
        }
    }

    /// A snapshot of `members` with `placed` containers.
    pub fn with_placed(members: Vec<Member>, placed: Vec<Placed>) -> Snapshot {
        let mut snapshot = Snapshot::new(members);
        for container in placed {
            snapshot.add_placed(container);
        }
        snapshot
    }

    /// Every member.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every member, to change their figures (status, allocation, cordoning). Their names,
    /// labels and failure domains must stay as they are: the snapshot's indexes were made of
    /// them.
    pub fn members_mut(&mut self) -> &mut [Member] {
        &mut self.members
    }

    /// The operator's containers, placed or reserved, one entry per container.
    pub fn placed(&self) -> &[Placed] {
        &self.placed
    }

    /// Placed containers grouped by namespace and labels.
    pub fn placed_groups(&self) -> &[PlacedGroup] {
        &self.index.groups
    }

    /// The group and member index (if the member is known) of the placed container
    /// `namespace`/`name`.
    pub fn placed_at(&self, namespace: &str, name: &str) -> Option<(usize, Option<usize>)> {
        let (position, group) = *self.index.placed_by_name.get(namespace)?.get(name)?;
        let member = self
            .placed
            .get(position)
            .and_then(|placed| self.member_index(&placed.member));
        Some((group, member))
    }

    /// The index of the member named `name`.
    pub fn member_index(&self, name: &str) -> Option<usize> {
        self.index.member_by_name.get(name).copied()
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.get(self.member_index(name)?)
    }

    /// The failure domains of the members.
    pub fn failure_domains(&self) -> &Domains {
        &self.index.failure_domains
    }

    /// The domains of the member label `key`; `None` when no member has it.
    pub fn label_domains(&self, key: &str) -> Option<&Domains> {
        self.index.label_domains.get(key)
    }

    /// Counts `container` as placed. A container already there (by namespace and name) moves
    /// to the member and labels given now: the API's view of a container and its reservation
    /// are one container, not two.
    pub fn add_placed(&mut self, container: Placed) {
        let group = self.group_of(&container.namespace, &container.labels);
        let member = self.member_index(&container.member);
        let known = self
            .index
            .placed_by_name
            .get(&container.namespace)
            .and_then(|names| names.get(&container.name))
            .copied();
        if let Some((position, old_group)) = known {
            let old_member = self
                .placed
                .get(position)
                .and_then(|old| self.member_index(&old.member));
            self.uncount(old_group, old_member);
            self.count(group, member);
            if let Some(entry) = self
                .index
                .placed_by_name
                .get_mut(&container.namespace)
                .and_then(|names| names.get_mut(&container.name))
            {
                *entry = (position, group);
            }
            if let Some(slot) = self.placed.get_mut(position) {
                *slot = container;
            }
            return;
        }
        self.count(group, member);
        let entry = (self.placed.len(), group);
        // The namespace is cloned once per namespace, not once per container.
        match self.index.placed_by_name.get_mut(&container.namespace) {
            Some(names) => {
                names.insert(container.name.clone(), entry);
            }
            None => {
                self.index.placed_by_name.insert(
                    container.namespace.clone(),
                    HashMap::from([(container.name.clone(), entry)]),
                );
            }
        }
        self.placed.push(container);
    }

    /// Replaces the placed containers with `placed`.
    pub fn set_placed(&mut self, placed: Vec<Placed>) {
        self.placed.clear();
        self.index.groups.clear();
        self.index.group_by_labels.clear();
        self.index.placed_by_name.clear();
        for container in placed {
            self.add_placed(container);
        }
    }

    /// The number of the group of `namespace` and `labels`, made if new.
    fn group_of(&mut self, namespace: &str, labels: &BTreeMap<String, String>) -> usize {
        if let Some(group) = self
            .index
            .group_by_labels
            .get(namespace)
            .and_then(|by_labels| by_labels.get(labels))
        {
            return *group;
        }
        self.index.groups.push(PlacedGroup {
            namespace: namespace.to_owned(),
            labels: labels.clone(),
            ..PlacedGroup::default()
        });
        let group = self.index.groups.len() - 1;
        self.index
            .group_by_labels
            .entry(namespace.to_owned())
            .or_default()
            .insert(labels.clone(), group);
        group
    }

    fn count(&mut self, group: usize, member: Option<usize>) {
        if let Some(group) = self.index.groups.get_mut(group) {
            group.total += 1;
            if let Some(member) = member {
                *group.per_member.entry(member).or_default() += 1;
            }
        }
    }

    fn uncount(&mut self, group: usize, member: Option<usize>) {
        if let Some(group) = self.index.groups.get_mut(group) {
            group.total = group.total.saturating_sub(1);
            if let Some(member) = member
                && let Some(count) = group.per_member.get_mut(&member)
            {
                *count = count.saturating_sub(1);
            }
        }
    }

    /// Counts `request` as placed on `member`: its resources allocated there, one instance
    /// more, and the container among the placed ones (for affinity and spreading).
    pub fn land(&mut self, member: &str, request: &Request) {
        if let Some(index) = self.member_index(member)
            && let Some(target) = self.members.get_mut(index)
        {
            target.allocated = target.allocated.plus(request.resources);
            target.instances += 1;
            target.unlimited.0 += u32::from(request.resources.cpu <= 0.0);
            target.unlimited.1 += u32::from(request.resources.memory <= 0.0);
        }
        self.add_placed(Placed {
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
    /// without one, plus what the Pods on the host request.
    pub fn scoring_allocated(&self) -> Resources {
        Resources {
            cpu: self.allocated.cpu + f64::from(self.unlimited.0) * SCORING_DEFAULT.cpu,
            memory: self.allocated.memory + f64::from(self.unlimited.1) * SCORING_DEFAULT.memory,
        }
        .plus(self.pods)
    }

    /// What is held on the member's host: LXD's instances and reservations, and the Pods.
    pub fn held(&self) -> Resources {
        self.allocated.plus(self.pods)
    }
}

/// Bytes as people read them: `14.2 GiB`, `512 MiB`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// CPU cores as people read them: `2`, `1.5`.
pub fn format_cores(cores: f64) -> String {
    let text = format!("{cores:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
