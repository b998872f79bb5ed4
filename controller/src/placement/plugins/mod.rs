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

use std::collections::BTreeMap;
use std::fmt::Debug;

use super::model::{Member, Request, Snapshot};

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

/// What every plugin sees.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The container to place.
    pub request: &'a Request,
    /// The cluster.
    pub snapshot: &'a Snapshot,
    /// The policy's overcommit.
    pub overcommit: Overcommit,
}

/// Arguments of a plugin, as a policy gives them.
pub type Args = BTreeMap<String, String>;

/// Removes members that cannot or must not take the container.
pub trait Filter: Debug + Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// `None` when `member` passes, else the reason it is left out.
    fn filter(&self, context: &Context<'_>, member: &Member) -> Option<String>;
}

/// Rates members from 0 (worst) to 100 (best).
pub trait Scorer: Debug + Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// One score per candidate, in the same order.
    fn score(&self, context: &Context<'_>, candidates: &[&Member]) -> Vec<f64>;
}

type FilterFactory = fn(&Args) -> Result<Box<dyn Filter>, String>;
type ScorerFactory = fn(&Args) -> Result<Box<dyn Scorer>, String>;

/// Every filter plugin, by name.
pub const FILTERS: &[(&str, FilterFactory)] = &[
    ("online", online::new),
    ("architecture", architecture::new),
    ("target", target::new),
    ("member-selector", member_selector::new),
    ("capacity", capacity::new),
    ("affinity", affinity::new),
    ("anti-affinity", anti_affinity::new),
];

/// Every score plugin, by name.
pub const SCORERS: &[(&str, ScorerFactory)] = &[
    ("fewest-instances", fewest_instances::new),
    ("least-allocated", least_allocated::new),
    ("least-loaded", least_loaded::new),
    ("most-allocated", most_allocated::new),
    ("spread", spread::new),
    ("preferred-affinity", preferred_affinity::new),
];

/// The filter plugin `name` with `args`.
pub fn filter(name: &str, args: &Args) -> Result<Box<dyn Filter>, String> {
    let (_, factory) = FILTERS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        format!(
            "unknown filter plugin {name:?} (known: {})",
            FILTERS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    factory(args)
}

/// The score plugin `name` with `args`.
pub fn scorer(name: &str, args: &Args) -> Result<Box<dyn Scorer>, String> {
    let (_, factory) = SCORERS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        format!(
            "unknown score plugin {name:?} (known: {})",
            SCORERS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    factory(args)
}

/// Refuses arguments for plugins that take none.
fn no_args(name: &str, args: &Args) -> Result<(), String> {
    match args.keys().next() {
        Some(key) => Err(format!("plugin {name} takes no arguments, not {key:?}")),
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

/// How many placed containers in the request's namespace match `selector`, per member.
fn matching_per_member(
    context: &Context<'_>,
    selector: &lxd_operator_crds::shared::LabelSelector,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for placed in &context.snapshot.placed {
        if placed.namespace == context.request.namespace
            && placed.name != context.request.name
            && super::selector::matches(selector, &placed.labels)
        {
            *counts.entry(placed.member.clone()).or_default() += 1;
        }
    }
    counts
}

/// Whether `member` shares the term's topology with any member in `holders`.
fn shares_topology(
    context: &Context<'_>,
    topology: lxd_operator_crds::container::Topology,
    member: &Member,
    holders: &BTreeMap<String, usize>,
) -> bool {
    use lxd_operator_crds::container::Topology;
    match topology {
        Topology::Member => holders.get(&member.name).is_some_and(|n| *n > 0),
        Topology::FailureDomain => holders.iter().any(|(holder, n)| {
            *n > 0 && context.snapshot.failure_domain_of(holder) == member.failure_domain
        }),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Small clusters for plugin tests.
    use super::super::model::{Member, Placed, Request, Resources, Snapshot};

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
        Snapshot {
            members,
            placed: vec![],
        }
    }
}
