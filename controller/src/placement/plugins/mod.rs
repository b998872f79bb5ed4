//! The plugins placement is made of. A filter removes members that cannot or must not take the
//! container, with a short reason that can be counted ("insufficient memory"); a scorer rates
//! each remaining member from 0 to 100. Adding a plugin: one file implementing [`Filter`] or
//! [`Scorer`], and one line in [`FILTERS`] or [`SCORERS`].

mod affinity;
mod anti_affinity;
mod architecture;
mod capacity;
mod fewest_instances;
mod least_allocated;
mod least_loaded;
mod member_selector;
mod most_allocated;
mod online;
mod preferred_affinity;
mod spread;
mod target;
mod topology_spread;

use std::collections::BTreeMap;
use std::fmt::Debug;

use lxd_operator_crds::container::{AffinityTerm, Topology};

use super::model::{Domains, Member, PlacedGroup, Request, Snapshot};

/// How far requests may exceed capacity (1.0: not at all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overcommit {
    /// CPU ratio.
    pub cpu: f64,
    /// Memory ratio.
    pub memory: f64,
}

impl Default for Overcommit {
    fn default() -> Self {
        Overcommit {
            cpu: 1.0,
            memory: 1.0,
        }
    }
}

/// What every plugin sees: the decision's inputs, and what is counted once per decision for
/// the plugins that need it (placed containers matching the request's terms, per member and
/// per domain), so that no plugin goes through the placed containers for each member.
#[derive(Debug)]
pub struct Context<'a> {
    /// The container to place.
    pub request: &'a Request,
    /// The cluster.
    pub snapshot: &'a Snapshot,
    /// The policy's overcommit.
    pub overcommit: Overcommit,
    /// Per `placement.affinity` term, the containers matching it.
    affinity: Vec<Holders>,
    /// Per `placement.antiAffinity` term, the containers matching it.
    anti_affinity: Vec<Holders>,
    /// Per topology spread constraint, the matching containers per domain.
    spread: Vec<topology_spread::SpreadCounts<'a>>,
}

impl<'a> Context<'a> {
    /// The context of deciding for `request` on `snapshot`: counts what the request's terms
    /// and constraints need, once.
    pub fn new(request: &'a Request, snapshot: &'a Snapshot, overcommit: Overcommit) -> Self {
        let placement = &request.placement;
        let holders = |term: &AffinityTerm| Holders::count(request, snapshot, term);
        Context {
            request,
            snapshot,
            overcommit,
            affinity: placement.affinity.iter().map(holders).collect(),
            anti_affinity: placement.anti_affinity.iter().map(holders).collect(),
            spread: placement
                .topology_spread_constraints
                .iter()
                .map(|constraint| {
                    topology_spread::SpreadCounts::count(request, snapshot, constraint)
                })
                .collect(),
        }
    }
}

/// A member as plugins see it: with its index in the snapshot, where per-member counts are kept.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    /// Its index in [`Snapshot::members`].
    pub index: usize,
    /// The member.
    pub member: &'a Member,
}

impl std::ops::Deref for MemberRef<'_> {
    type Target = Member;

    fn deref(&self) -> &Member {
        self.member
    }
}

/// Why a filter left a member out. Kept as data and written out only for what is shown or
/// counted: a decision may leave thousands of members out and show five.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A fixed text.
    Fixed(&'static str),
    /// A text made for this member.
    Text(String),
    /// A topology spread constraint would be broken.
    Skew(topology_spread::Skew),
}

impl Reason {
    /// The reason as shown and counted (`insufficient memory`).
    pub fn text(&self, request: &Request, snapshot: &Snapshot) -> std::borrow::Cow<'_, str> {
        match self {
            Reason::Fixed(text) => (*text).into(),
            Reason::Text(text) => text.as_str().into(),
            Reason::Skew(skew) => skew.text(request, snapshot).into(),
        }
    }
}

/// Containers of the request's namespace matching one affinity term's selector (the request
/// itself not counted), per member and per failure domain.
#[derive(Debug, Default)]
struct Holders {
    per_member: Vec<u32>,
    /// Per failure domain number; counted only for terms about failure domains.
    per_failure_domain: Vec<u32>,
    /// Matching containers, on known members or not.
    total: u32,
}

impl Holders {
    fn count(request: &Request, snapshot: &Snapshot, term: &AffinityTerm) -> Holders {
        let (per_member, total) = matching_per_member(request, snapshot, |group| {
            group.namespace == request.namespace
                && super::selector::matches(&term.selector, &group.labels)
        });
        let per_failure_domain = match term.topology {
            Topology::Member => Vec::new(),
            Topology::FailureDomain => per_domain(&per_member, snapshot.failure_domains()),
        };
        Holders {
            per_member,
            per_failure_domain,
            total,
        }
    }

    /// Whether `member` shares the term's topology with any of these containers.
    fn near(&self, topology: Topology, snapshot: &Snapshot, member: MemberRef<'_>) -> bool {
        match topology {
            Topology::Member => self.per_member.get(member.index).is_some_and(|n| *n > 0),
            Topology::FailureDomain => snapshot
                .failure_domains()
                .of(member.index)
                .and_then(|domain| self.per_failure_domain.get(domain as usize))
                .is_some_and(|n| *n > 0),
        }
    }
}

/// How many placed containers of the groups `counted` picks are on each member (by index), the
/// request itself left out, and how many there are in all (on known members or not). Costs the
/// number of members plus the number of matching containers, from the snapshot's groups.
fn matching_per_member(
    request: &Request,
    snapshot: &Snapshot,
    counted: impl Fn(&PlacedGroup) -> bool,
) -> (Vec<u32>, u32) {
    let mut per_member = vec![0u32; snapshot.members().len()];
    let mut total = 0u32;
    let mut matched = Vec::new();
    for (number, group) in snapshot.placed_groups().iter().enumerate() {
        if !counted(group) {
            continue;
        }
        matched.push(number);
        total += group.total;
        for (&member, &count) in &group.per_member {
            if let Some(slot) = per_member.get_mut(member) {
                *slot += count;
            }
        }
    }
    // The request itself, when an earlier decision of it is among the placed ones, does not
    // count against it.
    if total > 0
        && let Some((group, member)) = snapshot.placed_at(&request.namespace, &request.name)
        && matched.contains(&group)
    {
        total -= 1;
        if let Some(slot) = member.and_then(|member| per_member.get_mut(member)) {
            *slot = slot.saturating_sub(1);
        }
    }
    (per_member, total)
}

/// Per-member counts summed per domain of `domains`.
fn per_domain(per_member: &[u32], domains: &Domains) -> Vec<u32> {
    let mut counts = vec![0u32; domains.names.len()];
    for (member, count) in per_member.iter().enumerate() {
        if let Some(slot) = domains
            .of(member)
            .and_then(|domain| counts.get_mut(domain as usize))
        {
            *slot += count;
        }
    }
    counts
}

/// Arguments of a plugin, as a policy gives them.
pub type Args = BTreeMap<String, String>;

/// Removes members that cannot or must not take the container.
pub trait Filter: Debug + Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// Whether the filter can leave any member out for this request (asked once per
    /// decision): a filter of what the request does not ask for (no target, no affinity
    /// terms) is skipped, so that it costs nothing per member.
    fn applies(&self, _context: &Context<'_>) -> bool {
        true
    }
    /// `None` when `member` passes, else the reason it is left out.
    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason>;
    /// A line for the decision's explanation about what decided, if any (once per decision).
    fn explain(&self, _context: &Context<'_>) -> Option<String> {
        None
    }
}

/// Rates members from 0 (worst) to 100 (best).
pub trait Scorer: Debug + Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// The score every candidate gets for this request, when it is the same for all (asked
    /// once per decision): the scorer is then not run member by member.
    fn uniform(&self, _context: &Context<'_>) -> Option<f64> {
        None
    }
    /// One score per candidate, in the same order.
    fn score(&self, context: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64>;
    /// A line for the decision's explanation about what decided, if any (once per decision).
    fn explain(&self, _context: &Context<'_>) -> Option<String> {
        None
    }
}

/// Why a plugin cannot be made as a policy names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// No plugin of that kind has that name.
    #[error("unknown {kind} plugin {name:?} (known: {known})")]
    Unknown {
        kind: &'static str,
        name: String,
        known: String,
    },
    /// The plugin takes no arguments, and was given one.
    #[error("plugin {plugin} takes no arguments, not {argument:?}")]
    UnexpectedArgument {
        plugin: &'static str,
        argument: String,
    },
}

/// Makes a plugin from the arguments a policy gives it.
type Factory<T> = fn(&Args) -> Result<Box<T>, PluginError>;

/// Every filter plugin, by name.
pub const FILTERS: &[(&str, Factory<dyn Filter>)] = &[
    ("online", plain_filter::<online::Online>),
    ("architecture", plain_filter::<architecture::Architecture>),
    ("target", plain_filter::<target::Target>),
    (
        "member-selector",
        plain_filter::<member_selector::MemberSelector>,
    ),
    ("capacity", plain_filter::<capacity::Capacity>),
    ("affinity", plain_filter::<affinity::Affinity>),
    ("anti-affinity", plain_filter::<anti_affinity::AntiAffinity>),
    (
        "topology-spread",
        plain_filter::<topology_spread::TopologySpread>,
    ),
];

/// Every score plugin, by name.
pub const SCORERS: &[(&str, Factory<dyn Scorer>)] = &[
    (
        "fewest-instances",
        plain_scorer::<fewest_instances::FewestInstances>,
    ),
    (
        "least-allocated",
        plain_scorer::<least_allocated::LeastAllocated>,
    ),
    ("least-loaded", plain_scorer::<least_loaded::LeastLoaded>),
    (
        "most-allocated",
        plain_scorer::<most_allocated::MostAllocated>,
    ),
    ("spread", plain_scorer::<spread::Spread>),
    (
        "preferred-affinity",
        plain_scorer::<preferred_affinity::PreferredAffinity>,
    ),
    (
        "topology-spread",
        plain_scorer::<topology_spread::TopologySpread>,
    ),
];

/// The filter plugin `name` with `args`.
pub fn filter(name: &str, args: &Args) -> Result<Box<dyn Filter>, PluginError> {
    make("filter", FILTERS, name, args)
}

/// The score plugin `name` with `args`.
pub fn scorer(name: &str, args: &Args) -> Result<Box<dyn Scorer>, PluginError> {
    make("score", SCORERS, name, args)
}

/// The plugin `name` of `table` (of one `kind`) with `args`; an unknown name is refused with
/// the names there are.
fn make<T: ?Sized>(
    kind: &'static str,
    table: &[(&str, Factory<T>)],
    name: &str,
    args: &Args,
) -> Result<Box<T>, PluginError> {
    let (_, factory) =
        table
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| PluginError::Unknown {
                kind,
                name: name.to_owned(),
                known: table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            })?;
    factory(args)
}

/// The factory of a filter that takes no arguments.
fn plain_filter<F: Filter + Default + 'static>(
    args: &Args,
) -> Result<Box<dyn Filter>, PluginError> {
    let filter = F::default();
    no_args(filter.name(), args)?;
    Ok(Box::new(filter))
}

/// The factory of a scorer that takes no arguments.
fn plain_scorer<S: Scorer + Default + 'static>(
    args: &Args,
) -> Result<Box<dyn Scorer>, PluginError> {
    let scorer = S::default();
    no_args(scorer.name(), args)?;
    Ok(Box::new(scorer))
}

/// Refuses arguments for plugins that take none.
fn no_args(plugin: &'static str, args: &Args) -> Result<(), PluginError> {
    match args.keys().next() {
        Some(argument) => Err(PluginError::UnexpectedArgument {
            plugin,
            argument: argument.clone(),
        }),
        None => Ok(()),
    }
}

/// Share of `capacity` left after `used`, from 0 to 1 (1 when capacity is unknown).
fn free_share(used: f64, capacity: f64) -> f64 {
    if capacity <= 0.0 {
        1.0
    } else {
        (1.0 - used / capacity).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Small clusters for plugin tests.
    use lxd_operator_crds::container::{TopologySpreadConstraint, WhenUnsatisfiable};
    use lxd_operator_crds::shared::LabelSelector;

    use super::super::model::{Member, Placed, Request, Resources, Snapshot};
    use super::{Args, Context, Filter, MemberRef, Scorer};

    /// Spread `app: web` containers over `key` with a skew of at most 1.
    pub(crate) fn spread_over(key: &str, when: WhenUnsatisfiable) -> TopologySpreadConstraint {
        TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_owned(),
            when_unsatisfiable: when,
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                match_expressions: None,
            }),
        }
    }

    /// The filter plugin `name`, as a policy without arguments gets it.
    pub fn filter(name: &str) -> Box<dyn Filter> {
        super::filter(name, &Args::new()).unwrap()
    }

    /// The score plugin `name`, as a policy without arguments gets it.
    pub fn scorer(name: &str) -> Box<dyn Scorer> {
        super::scorer(name, &Args::new()).unwrap()
    }

    /// What a plugin sees of `request` in `snapshot`, without overcommit.
    pub fn context_for<'a>(request: &'a Request, snapshot: &'a Snapshot) -> Context<'a> {
        Context::new(request, snapshot, Default::default())
    }

    /// The member at `index` of `snapshot`, as plugins get it.
    pub fn at(snapshot: &Snapshot, index: usize) -> MemberRef<'_> {
        MemberRef {
            index,
            member: &snapshot.members()[index],
        }
    }

    /// Every member of `snapshot`, as scorers get them.
    pub fn all(snapshot: &Snapshot) -> Vec<MemberRef<'_>> {
        (0..snapshot.members().len())
            .map(|index| at(snapshot, index))
            .collect()
    }

    /// A member outside any snapshot (for plugins that read only the member).
    pub fn alone(member: &Member) -> MemberRef<'_> {
        MemberRef {
            index: usize::MAX,
            member,
        }
    }

    /// The reason `filter` gives for `member`, as text.
    pub fn reason(
        filter: &dyn Filter,
        context: &Context<'_>,
        member: MemberRef<'_>,
    ) -> Option<String> {
        filter
            .filter(context, member)
            .map(|r| r.text(context.request, context.snapshot).into_owned())
    }

    pub fn member(name: &str, domain: &str, cpu: f64, memory_gib: f64) -> Member {
        Member {
            name: name.to_owned(),
            status: "Online".to_owned(),
            architecture: "x86_64".to_owned(),
            failure_domain: domain.to_owned(),
            capacity: Resources {
                cpu,
                memory: memory_gib * 1024.0 * 1024.0 * 1024.0,
            },
            ..Member::default()
        }
    }

    pub fn gib(n: f64) -> f64 {
        n * 1024.0 * 1024.0 * 1024.0
    }

    pub fn request(cpu: f64, memory_gib: f64) -> Request {
        Request {
            namespace: "default".to_owned(),
            name: "new".to_owned(),
            resources: Resources {
                cpu,
                memory: gib(memory_gib),
            },
            ..Request::default()
        }
    }

    pub fn placed(name: &str, app: &str, member: &str) -> Placed {
        Placed {
            namespace: "default".to_owned(),
            name: name.to_owned(),
            labels: [("app".to_owned(), app.to_owned())].into(),
            member: member.to_owned(),
        }
    }

    pub fn snapshot(members: Vec<Member>) -> Snapshot {
        Snapshot::new(members)
    }
}
