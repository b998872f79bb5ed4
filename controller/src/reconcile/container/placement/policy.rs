//! Which placement policy places a container, decided in one place: the LxdPlacementPolicy it
//! names, its built-in strategy, its cluster's `defaultPlacementPolicy`, or `least-loaded`. The
//! name chosen here labels the placement metrics too, whether the decision succeeds or not.

use kube::api::Api;
use lxd_operator_crds::container::PlacementStrategy;
use lxd_operator_crds::kubernetes_nodes::KubernetesNodes;
use lxd_operator_crds::{LxdCluster, LxdPlacementPolicy};

use crate::placement::policy::{self, Policy, PolicyError};

/// What a container's spec says of its policy (validated: at most one of the two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyChoice {
    /// `spec.placement.policy`.
    Named(String),
    /// `spec.placement.strategy`.
    Strategy(PlacementStrategy),
    /// Neither: the cluster's default, else `least-loaded`.
    ClusterDefault,
}

/// The policy that places a container, before it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChosenPolicy {
    /// An LxdPlacementPolicy of this name.
    Named(String),
    /// A built-in strategy.
    Strategy(PlacementStrategy),
}

/// The strategy of a container that names none, on a cluster without a default.
pub const DEFAULT_STRATEGY: PlacementStrategy = PlacementStrategy::LeastLoaded;

impl ChosenPolicy {
    /// From the container's choice and its cluster's `defaultPlacementPolicy`.
    pub fn of(choice: &PolicyChoice, cluster_default: Option<&str>) -> ChosenPolicy {
        match (choice, cluster_default) {
            (PolicyChoice::Named(name), _) => ChosenPolicy::Named(name.clone()),
            (PolicyChoice::Strategy(strategy), _) => ChosenPolicy::Strategy(*strategy),
            (PolicyChoice::ClusterDefault, Some(name)) => ChosenPolicy::Named(name.to_owned()),
            (PolicyChoice::ClusterDefault, None) => ChosenPolicy::Strategy(DEFAULT_STRATEGY),
        }
    }

    /// Its name, as status, Events and metrics show it.
    pub fn name(&self) -> &str {
        match self {
            ChosenPolicy::Named(name) => name,
            ChosenPolicy::Strategy(strategy) => policy::strategy_name(*strategy),
        }
    }
}

/// Why the chosen policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// No LxdPlacementPolicy of that name.
    #[error("LxdPlacementPolicy {name} does not exist")]
    Missing { name: String },
    /// It does not compile (unknown plugin, bad argument).
    #[error("LxdPlacementPolicy {name}: {source}")]
    Invalid {
        name: String,
        #[source]
        source: PolicyError,
    },
    /// Reading the API failed.
    #[error("reading placement policies: {0}")]
    Kube(#[from] kube::Error),
}

/// What a decision reads of its LxdCluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterSettings {
    /// Members that take no new containers (cordoned, drained, leaving).
    pub cordoned: Vec<String>,
    /// The Kubernetes Nodes beside its members, if any.
    pub kubernetes_nodes: Option<KubernetesNodes>,
}

/// Chooses the policy, and reads what the decision needs of the cluster.
pub async fn choose(
    kube: &kube::Client,
    choice: &PolicyChoice,
    cluster: &str,
) -> Result<(ChosenPolicy, ClusterSettings), kube::Error> {
    let found = Api::<LxdCluster>::all(kube.clone())
        .get_opt(cluster)
        .await?;
    let cluster_default = match choice {
        PolicyChoice::ClusterDefault => found
            .as_ref()
            .and_then(|c| c.spec.default_placement_policy.clone()),
        _ => None,
    };
    // A member being emptied (drained, or leaving the cluster) takes no new containers either.
    let settings = found
        .map(|c| {
            let mut members = c.members_to_empty();
            members.extend(c.spec.cordoned_members);
            ClusterSettings {
                cordoned: members,
                kubernetes_nodes: c.spec.kubernetes_nodes,
            }
        })
        .unwrap_or_default();
    Ok((
        ChosenPolicy::of(choice, cluster_default.as_deref()),
        settings,
    ))
}

/// Loads and compiles the chosen policy.
pub async fn load(kube: &kube::Client, chosen: &ChosenPolicy) -> Result<Policy, PolicyLoadError> {
    let name = match chosen {
        ChosenPolicy::Strategy(strategy) => return Ok(policy::strategy(*strategy)),
        ChosenPolicy::Named(name) => name,
    };
    let found = Api::<LxdPlacementPolicy>::all(kube.clone())
        .get_opt(name)
        .await?
        .ok_or_else(|| PolicyLoadError::Missing { name: name.clone() })?;
    policy::from_spec(name, &found.spec).map_err(|source| PolicyLoadError::Invalid {
        name: name.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_s_own_choice_wins_then_the_cluster_s_default_then_least_loaded() {
        let named = PolicyChoice::Named("gpu-aware".into());
        let spread = PolicyChoice::Strategy(PlacementStrategy::Spread);
        let cases = [
            (&named, Some("packed"), "gpu-aware"),
            (&spread, Some("packed"), "spread"),
            (&PolicyChoice::ClusterDefault, Some("packed"), "packed"),
            (&PolicyChoice::ClusterDefault, None, "least-loaded"),
        ];
        for (choice, cluster_default, name) in cases {
            assert_eq!(
                ChosenPolicy::of(choice, cluster_default).name(),
                name,
                "{choice:?} on a cluster with default {cluster_default:?}"
            );
        }
    }
}
