//! Builders of API objects for tests (cargo feature `testing`), so that a test says only what
//! matters to its story and the rest is the same everywhere.
//!
//! ```no_run
//! use lxd_operator_crds::LxdContainer;
//! use lxd_operator_crds::container::{DesiredState, PlacementStrategy};
//!
//! let web = LxdContainer::builder("web-1")
//!     .namespace("shop")
//!     .cpu(0.5)
//!     .memory("256Mi")
//!     .state(DesiredState::Stopped)
//!     .strategy(PlacementStrategy::Spread)
//!     .build();
//! assert_eq!(web.spec.cluster_ref.name, "local");
//! ```

// Developer note: the defaults are what the test cluster of `hack/lxd-cluster.sh` has, an
// LxdCluster named `local` and the image `busybox`.

use std::collections::BTreeMap;

use crate::container::{
    ContainerResources, DesiredState, ImageSource, LxdContainer, LxdContainerSpec,
    MemberFailurePolicy, Placement, PlacementStrategy,
};
use crate::set::{
    ContainerTemplate, LxdContainerSet, LxdContainerSetSpec, TemplateMetadata, UpdateStrategy,
};
use crate::shared::{ClusterReference, IntOrString, LabelSelector};

/// The LxdCluster every built container refers to unless told otherwise.
pub const CLUSTER: &str = "local";
/// The image alias every built container is made from unless told otherwise.
pub const IMAGE: &str = "busybox";

/// A reference to the LxdCluster `name`.
pub fn cluster_ref(name: &str) -> ClusterReference {
    ClusterReference {
        name: name.to_owned(),
    }
}

/// The image with this alias.
pub fn image(alias: &str) -> ImageSource {
    ImageSource {
        alias: Some(alias.to_owned()),
        fingerprint: None,
    }
}

/// A set `name` of `replicas` [`container_spec`] children labelled `app: <name>`, selected by
/// that label.
pub fn container_set(name: &str, replicas: i32) -> LxdContainerSet {
    let labels: BTreeMap<String, String> = [("app".to_owned(), name.to_owned())].into();
    LxdContainerSet::new(
        name,
        LxdContainerSetSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            template: ContainerTemplate {
                metadata: TemplateMetadata {
                    labels,
                    annotations: BTreeMap::new(),
                },
                spec: container_spec(),
            },
            update_strategy: UpdateStrategy::default(),
        },
    )
}

/// The smallest valid spec: a Running [`IMAGE`] container on [`CLUSTER`], nothing else set.
pub fn container_spec() -> LxdContainerSpec {
    LxdContainerSpec {
        cluster_ref: cluster_ref(CLUSTER),
        instance_name: None,
        image: image(IMAGE),
        profiles: None,
        config: BTreeMap::new(),
        devices: BTreeMap::new(),
        resources: None,
        ephemeral: false,
        state: DesiredState::Running,
        placement: None,
    }
}

impl LxdContainer {
    /// A builder of an LxdContainer named `name`, starting from [`container_spec`].
    pub fn builder(name: &str) -> LxdContainerBuilder {
        LxdContainerBuilder {
            container: LxdContainer::new(name, container_spec()),
        }
    }
}

/// Builds an [`LxdContainer`] step by step; see [`LxdContainer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LxdContainerBuilder {
    container: LxdContainer,
}

impl LxdContainerBuilder {
    /// Sets `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.container.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Sets `metadata.uid`, as the API server would.
    pub fn uid(mut self, uid: &str) -> Self {
        self.container.metadata.uid = Some(uid.to_owned());
        self
    }

    /// Refers to the LxdCluster `name`.
    pub fn cluster(mut self, name: &str) -> Self {
        self.container.spec.cluster_ref = cluster_ref(name);
        self
    }

    /// Sets `spec.instanceName`.
    pub fn instance_name(mut self, name: &str) -> Self {
        self.container.spec.instance_name = Some(name.to_owned());
        self
    }

    /// Makes the container from the image with this alias.
    pub fn image(self, alias: &str) -> Self {
        self.image_source(image(alias))
    }

    /// Sets `spec.image` as given (an alias, a fingerprint, or both for a test of refusals).
    pub fn image_source(mut self, image: ImageSource) -> Self {
        self.container.spec.image = image;
        self
    }

    /// Sets `spec.profiles` (an empty list applies none).
    pub fn profiles(mut self, profiles: &[&str]) -> Self {
        self.container.spec.profiles = Some(profiles.iter().map(|p| (*p).to_owned()).collect());
        self
    }

    /// Adds one LXD config key.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.container
            .spec
            .config
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `spec.resources.cpu`.
    pub fn cpu(mut self, cores: f64) -> Self {
        self.resources().cpu = Some(cores);
        self
    }

    /// Sets `spec.resources.memory` to a quantity such as `256Mi`.
    pub fn memory(mut self, quantity: &str) -> Self {
        self.resources().memory = Some(IntOrString::String(quantity.to_owned()));
        self
    }

    /// Sets `spec.state`.
    pub fn state(mut self, state: DesiredState) -> Self {
        self.container.spec.state = state;
        self
    }

    /// Sets the whole of `spec.placement`.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.container.spec.placement = Some(placement);
        self
    }

    /// Places with a built-in strategy.
    pub fn strategy(mut self, strategy: PlacementStrategy) -> Self {
        self.placement_mut().strategy = Some(strategy);
        self
    }

    /// Places with the LxdPlacementPolicy `name`.
    pub fn policy(mut self, name: &str) -> Self {
        self.placement_mut().policy = Some(name.to_owned());
        self
    }

    /// Pins the container to `member`.
    pub fn target(mut self, member: &str) -> Self {
        self.placement_mut().target = Some(member.to_owned());
        self
    }

    /// Whether the cluster's rebalancer may move it.
    pub fn rebalance(mut self, policy: crate::rebalance::RebalancePolicy) -> Self {
        self.placement_mut().rebalance = policy;
        self
    }

    /// The rebalancer asked it to move to `member` at `requested_at` (RFC 3339), as a round
    /// in `On` mode does through its annotations.
    pub fn rebalance_requested(mut self, member: &str, requested_at: &str) -> Self {
        self.container.metadata.annotations = Some(
            [
                (
                    crate::rebalance::MOVE_TO_ANNOTATION.to_owned(),
                    member.to_owned(),
                ),
                (
                    crate::rebalance::MOVE_REQUESTED_AT_ANNOTATION.to_owned(),
                    requested_at.to_owned(),
                ),
            ]
            .into(),
        );
        self
    }

    /// What to do when its member fails, and after how many seconds offline (None: the
    /// cluster's default).
    pub fn on_member_failure(mut self, policy: MemberFailurePolicy, grace: Option<u32>) -> Self {
        let placement = self.placement_mut();
        placement.on_member_failure = policy;
        placement.member_failure_grace_period_seconds = grace;
        self
    }

    /// The container.
    pub fn build(self) -> LxdContainer {
        self.container
    }

    fn resources(&mut self) -> &mut ContainerResources {
        self.container
            .spec
            .resources
            .get_or_insert_with(ContainerResources::default)
    }

    fn placement_mut(&mut self) -> &mut Placement {
        self.container
            .spec
            .placement
            .get_or_insert_with(Placement::default)
    }
}

impl From<LxdContainerBuilder> for LxdContainer {
    fn from(builder: LxdContainerBuilder) -> Self {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_container_is_the_smallest_spec_plus_what_was_said() {
        let built = LxdContainer::builder("web-1")
            .namespace("shop")
            .memory("64Mi")
            .target("node2")
            .build();
        assert_eq!(built.metadata.name.as_deref(), Some("web-1"));
        assert_eq!(built.metadata.namespace.as_deref(), Some("shop"));
        let mut expected = container_spec();
        expected.resources = Some(ContainerResources {
            cpu: None,
            memory: Some(IntOrString::String("64Mi".into())),
        });
        expected.placement = Some(Placement {
            target: Some("node2".into()),
            ..Placement::default()
        });
        assert_eq!(built.spec, expected);
    }
}
