//! The API of lxd-operator: the custom resources users apply (group `lxd-operator.dev`,
//! version `v1alpha1`).
//!
//! - [`LxdCluster`] (cluster-scoped): how to reach one LXD cluster, and what it looks like now.
//! - [`LxdContainer`] (namespaced): one LXD container, where it runs and in which state.
//! - [`LxdContainerSet`] (namespaced): a fleet of like containers, with rolling updates.
//! - [`LxdPlacementPolicy`] (cluster-scoped): a named placement strategy.
//!
//! With the feature `testing`, the module `testing` adds builders of these objects for tests (the
//! controller's unit tests and `tests/` use them).
//!
//! This crate holds types, and the rules both the API server and the controller apply to
//! them ([`guardrails`], [`quota`], decided together in [`admission`]). The CRD YAML in `charts/lxd-operator/crds/` is generated from
//! them by `lxd-operator crds` (see [`generate::crd_yaml`]) and never edited by hand.

#![forbid(unsafe_code)]

pub mod admission;
pub mod cluster;
pub mod container;
pub mod generate;
pub mod guardrails;
pub mod kubernetes_nodes;
pub mod policy;
pub mod quantity;
pub mod quota;
pub mod rebalance;
pub mod set;
pub mod shared;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cluster::{LxdCluster, LxdClusterSpec, LxdClusterStatus};
pub use container::{LxdContainer, LxdContainerSpec, LxdContainerStatus};
pub use policy::{LxdPlacementPolicy, LxdPlacementPolicySpec, LxdPlacementPolicyStatus};
pub use set::{LxdContainerSet, LxdContainerSetSpec, LxdContainerSetStatus};

/// The API group of every kind in this crate.
pub const GROUP: &str = "lxd-operator.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
