//! Policies: the built-in strategies, and LxdPlacementPolicies compiled from their spec.

use lxd_operator_crds::container::PlacementStrategy;
use lxd_operator_crds::policy::{LxdPlacementPolicySpec, TieBreak, WebhookExtender};

use super::plugins::{self, Args, Filter, Overcommit, PluginError, Scorer};
use super::webhook::{WebhookUrlError, check_url};

/// Filters every placement applies, listed or not.
const ALWAYS: &[&str] = &["online", "architecture", "target"];
/// Filters that carry out what a container's own spec asks (selector, affinity, topology
/// spread).
const SPEC_FILTERS: &[&str] = &[
    "member-selector",
    "affinity",
    "anti-affinity",
    "topology-spread",
];
/// The weight of the `topology-spread` scorer in every built-in strategy: as Kubernetes weighs
/// PodTopologySpread (2) against its resource scores (1). It scores only `ScheduleAnyway`
/// constraints, and 0 for every member without them (changing no ranking and no total).
const TOPOLOGY_SPREAD_WEIGHT: f64 = 2.0;

/// A policy ready to decide with.
#[derive(Debug)]
pub struct Policy {
    /// Its name: the strategy's or the LxdPlacementPolicy's.
    pub name: String,
    /// Filters, in order.
    pub filters: Vec<Box<dyn Filter>>,
    /// Scorers with their weights.
    pub scorers: Vec<(Box<dyn Scorer>, f64)>,
    /// Overcommit of the capacity filter.
    pub overcommit: Overcommit,
    /// Order among equal scores.
    pub tie_break: TieBreak,
    /// The webhook extender, if any.
    pub webhook: Option<WebhookExtender>,
}

/// A policy that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {source}")]
pub struct PolicyError {
    /// The offending field, e.g. `spec.scorers[1].name`.
    pub field: String,
    /// What is wrong with it.
    #[source]
    pub source: PolicyProblem,
}

/// What is wrong with a field of a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    /// The plugin it names, or its arguments.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The webhook's URL.
    #[error(transparent)]
    WebhookUrl(#[from] WebhookUrlError),
}

fn build(
    name: &str,
    filter_names: &[&str],
    scorer_names: &[(&str, f64)],
    tie_break: TieBreak,
) -> Result<Policy, PolicyError> {
    let no_args = Args::new();
    let filters = filter_names
        .iter()
        .map(|f| plugins::filter(f, &no_args))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PolicyError {
            field: "strategy".to_owned(),
            source: source.into(),
        })?;
    let scorers = scorer_names
        .iter()
        .map(|(s, w)| plugins::scorer(s, &no_args).map(|s| (s, *w)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PolicyError {
            field: "strategy".to_owned(),
            source: source.into(),
        })?;
    Ok(Policy {
        name: name.to_owned(),
        filters,
        scorers,
        overcommit: Overcommit::default(),
        tie_break,
        webhook: None,
    })
}

/// The name a strategy has in specs.
pub fn strategy_name(strategy: PlacementStrategy) -> &'static str {
    match strategy {
        PlacementStrategy::RoundRobin => "round-robin",
        PlacementStrategy::FewestInstances => "fewest-instances",
        PlacementStrategy::LeastLoaded => "least-loaded",
        PlacementStrategy::BinPack => "bin-pack",
        PlacementStrategy::Spread => "spread",
    }
}

/// A built-in strategy.
pub fn strategy(strategy: PlacementStrategy) -> Policy {
    let standard: Vec<&str> = ALWAYS
        .iter()
        .chain(["capacity"].iter())
        .chain(SPEC_FILTERS)
        .copied()
        .collect();
    // LXD's own rules, for comparison: no capacity check, as LXD has none.
    let like_lxd: Vec<&str> = ALWAYS.iter().chain(SPEC_FILTERS).copied().collect();
    let name = strategy_name(strategy);
    let built = match strategy {
        // Round-robin has no scores of its own: soft spread constraints order members, and
        // members equal by them take turns.
        PlacementStrategy::RoundRobin => build(
            name,
            &like_lxd,
            &[("topology-spread", TOPOLOGY_SPREAD_WEIGHT)],
            TieBreak::RoundRobin,
        ),
        PlacementStrategy::FewestInstances => build(
            name,
            &like_lxd,
            &[
                ("fewest-instances", 1.0),
                ("topology-spread", TOPOLOGY_SPREAD_WEIGHT),
            ],
            TieBreak::MemberName,
        ),
        // Requested resources and live usage together: the first tells members apart when they
        // share one host (the same host figures everywhere), the second when requests are not
        // what instances really use.
        PlacementStrategy::LeastLoaded => build(
            name,
            &standard,
            &[
                ("least-allocated", 3.0),
                ("least-loaded", 1.0),
                ("preferred-affinity", 2.0),
                ("topology-spread", TOPOLOGY_SPREAD_WEIGHT),
                ("fewest-instances", 0.001),
            ],
            TieBreak::MemberName,
        ),
        PlacementStrategy::BinPack => build(
            name,
            &standard,
            &[
                ("most-allocated", 3.0),
                ("preferred-affinity", 2.0),
                ("topology-spread", TOPOLOGY_SPREAD_WEIGHT),
            ],
            TieBreak::MemberName,
        ),
        PlacementStrategy::Spread => build(
            name,
            &standard,
            &[
                ("spread", 5.0),
                ("least-allocated", 1.0),
                ("preferred-affinity", 2.0),
                ("topology-spread", TOPOLOGY_SPREAD_WEIGHT),
            ],
            TieBreak::MemberName,
        ),
    };
    // The built-in names and plugins are fixed; a failure here is a bug caught by the tests.
    built.unwrap_or_else(|_| Policy {
        name: name.to_owned(),
        filters: Vec::new(),
        scorers: Vec::new(),
        overcommit: Overcommit::default(),
        tie_break: TieBreak::MemberName,
        webhook: None,
    })
}

/// Compiles an LxdPlacementPolicy. Unknown plugins and bad arguments name their field.
pub fn from_spec(name: &str, spec: &LxdPlacementPolicySpec) -> Result<Policy, PolicyError> {
    let no_args = Args::new();
    let mut filters: Vec<Box<dyn Filter>> = Vec::new();
    for always in ALWAYS {
        if !spec.filters.iter().any(|f| f.name == *always) {
            filters.push(
                plugins::filter(always, &no_args).map_err(|source| PolicyError {
                    field: "spec.filters".to_owned(),
                    source: source.into(),
                })?,
            );
        }
    }
    for (index, filter) in spec.filters.iter().enumerate() {
        filters.push(
            plugins::filter(&filter.name, &filter.args).map_err(|source| PolicyError {
                field: format!("spec.filters[{index}].name"),
                source: source.into(),
            })?,
        );
    }
    let scorers = spec
        .scorers
        .iter()
        .enumerate()
        .map(|(index, scorer)| {
            plugins::scorer(&scorer.name, &scorer.args)
                .map(|s| (s, f64::from(scorer.weight)))
                .map_err(|source| PolicyError {
                    field: format!("spec.scorers[{index}].name"),
                    source: source.into(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(webhook) = &spec.webhook {
        check_url(&webhook.url).map_err(|source| PolicyError {
            field: "spec.webhook.url".to_owned(),
            source: source.into(),
        })?;
    }
    let overcommit = spec
        .overcommit
        .as_ref()
        .map_or_else(Overcommit::default, |o| Overcommit {
            cpu: o.cpu,
            memory: o.memory,
        });
    Ok(Policy {
        name: name.to_owned(),
        filters,
        scorers,
        overcommit,
        tie_break: spec.tie_break,
        webhook: spec.webhook.clone(),
    })
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::policy::{FilterPlugin, ScorerPlugin};

    use super::*;

    #[test]
    fn every_strategy_builds_from_known_plugins() {
        for s in [
            PlacementStrategy::RoundRobin,
            PlacementStrategy::FewestInstances,
            PlacementStrategy::LeastLoaded,
            PlacementStrategy::BinPack,
            PlacementStrategy::Spread,
        ] {
            let policy = strategy(s);
            assert!(policy.filters.len() >= ALWAYS.len(), "{}", policy.name);
            assert_eq!(policy.name, strategy_name(s));
            // What a container's spec asks is carried out whatever the strategy.
            for spec_filter in SPEC_FILTERS {
                assert!(
                    policy.filters.iter().any(|f| f.name() == *spec_filter),
                    "{} lacks {spec_filter}",
                    policy.name
                );
            }
            assert!(
                policy
                    .scorers
                    .iter()
                    .any(|(s, w)| s.name() == "topology-spread" && *w > 0.0),
                "{}",
                policy.name
            );
        }
    }

    #[test]
    fn a_policy_naming_an_unknown_plugin_is_refused_with_the_field_and_the_known_names() {
        let spec = LxdPlacementPolicySpec {
            filters: vec![FilterPlugin {
                name: "capacity".into(),
                args: Default::default(),
            }],
            scorers: vec![
                ScorerPlugin {
                    name: "least-allocated".into(),
                    weight: 2,
                    args: Default::default(),
                },
                ScorerPlugin {
                    name: "cheapest".into(),
                    weight: 1,
                    args: Default::default(),
                },
            ],
            overcommit: None,
            tie_break: TieBreak::MemberName,
            webhook: None,
        };
        let error = from_spec("p", &spec).unwrap_err();
        assert_eq!(error.field, "spec.scorers[1].name");
        assert!(
            error.to_string().contains("cheapest") && error.to_string().contains("least-allocated"),
            "{error}"
        );
    }
}
