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
    use super::{Args, Context, Filter, Scorer};

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
        Context {
            request,
            snapshot,
            overcommit: Default::default(),
        }
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
        Snapshot {
            members,
            placed: vec![],
        }
    }
}
