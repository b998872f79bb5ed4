//! The admission decision on a write of an object that holds a container spec (an LxdContainer,
//! or an LxdContainerSet's template): one pure function, called by the embedded API server and
//! by the operator's validating webhook on Kubernetes, so that both worlds refuse the same
//! writes with the same words.
//!
//! - The namespace must be one its cluster admits (`namespaceSelector`), and the spec within the
//!   cluster's guardrails ([`crate::guardrails::refusals`]); a refusal is `Invalid` (422), one
//!   field error per violation.
//! - An LxdContainer is held to its namespace's quota on the cluster when it is created, moved
//!   to another cluster or asks for more; a refusal is `Forbidden` (403) with the figures, as
//!   a Kubernetes ResourceQuota refuses.
//! - Only what a write adds is refused (as Kubernetes ratchets CRD validation): what the object
//!   asked before of the same cluster is not refused again, so the controller's own writes
//!   (finalizers) and a user's unrelated edits still go through after a policy tightened.

use std::collections::BTreeMap;

use crate::cluster::LxdClusterSpec;
use crate::container::LxdContainerSpec;
use crate::guardrails::{Violation, refusals};
use crate::quota::{Quota, Usage, quota_refusal};

/// Where the container spec of an object of our `kind` is, as a JSON pointer: `/spec` for an
/// LxdContainer, `/spec/template/spec` for an LxdContainerSet; `None` for the other kinds,
/// which admission does not look at.
pub fn container_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "LxdContainer" => Some(LXD_CONTAINER_SPEC),
        "LxdContainerSet" => Some("/spec/template/spec"),
        _ => None,
    }
}

/// Where an LxdContainer's own spec is.
const LXD_CONTAINER_SPEC: &str = "/spec";

/// One write to admit: the object's container spec after it (and before it, for an update),
/// with what admission knows of its cluster and namespace.
#[derive(Debug, Clone, Copy)]
pub struct ContainerWrite<'a> {
    /// Where the container spec is in the object ([`container_spec_pointer`]).
    pub pointer: &'a str,
    /// The container spec the write stores.
    pub spec: &'a LxdContainerSpec,
    /// The container spec before the write (an update), if any.
    pub previous: Option<&'a LxdContainerSpec>,
    /// The spec of the LxdCluster `spec.clusterRef` names, when it exists.
    pub cluster: Option<&'a LxdClusterSpec>,
    /// The object's namespace.
    pub namespace: &'a str,
    /// The namespace's labels; read only when the cluster has a `namespaceSelector`
    /// ([`ContainerWrite::needs_namespace_labels`]), empty otherwise.
    pub namespace_labels: &'a BTreeMap<String, String>,
}

/// What admission says of a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing it adds is refused.
    Admitted,
    /// `422 Invalid`: each violation is one field error naming the field, the value and the
    /// rule.
    Invalid(Vec<Violation>),
    /// `403 Forbidden`: it would take its namespace over its quota on the cluster (the message
    /// has the figures), or does not say how much it asks under a CPU or memory quota.
    Forbidden(String),
}

impl Decision {
    /// The HTTP status a refusal is answered with; 200 when admitted.
    pub fn code(&self) -> u16 {
        match self {
            Decision::Admitted => 200,
            Decision::Invalid(_) => 422,
            Decision::Forbidden(_) => 403,
        }
    }
}

impl ContainerWrite<'_> {
    /// Whether the cluster's `namespaceSelector` needs the namespace's labels: a caller reads
    /// them only then.
    pub fn needs_namespace_labels(cluster: Option<&LxdClusterSpec>) -> bool {
        cluster.is_some_and(|c| c.namespace_selector.is_some())
    }

    /// The quota this write is held to, if any: an LxdContainer (a set holds nothing itself;
    /// its children are admitted one by one) in a namespace with a quota on its cluster, that
    /// is created, moved to another cluster, or asks for more CPU or memory. Only then must the
    /// caller count what the namespace's other LxdContainers on the cluster hold.
    pub fn quota(&self) -> Option<&Quota> {
        if self.pointer != LXD_CONTAINER_SPEC {
            return None;
        }
        let quota = self.cluster?.quotas.as_ref()?.of(self.namespace)?;
        let grows = match self.previous {
            None => true,
            Some(before) => {
                before.cluster_ref != self.spec.cluster_ref || {
                    let (was, is) = (Usage::of([before]), Usage::of([self.spec]));
                    is.cpu > was.cpu || is.memory > was.memory
                }
            }
        };
        grows.then_some(quota)
    }

    /// The decision. `used`: what the namespace's other LxdContainers on the cluster hold,
    /// counted by the caller when [`ContainerWrite::quota`] holds (ignored otherwise).
    pub fn decide(&self, used: Usage) -> Decision {
        let cluster = &self.spec.cluster_ref.name;
        let path = self.pointer.trim_start_matches('/').replace('/', ".");
        let refused = |spec: &LxdContainerSpec| {
            refusals(
                cluster,
                self.cluster,
                self.namespace,
                self.namespace_labels,
                &path,
                spec,
            )
        };
        // What the object asked before of the same cluster is not refused again; moved to
        // another cluster, it is checked anew against that one.
        let before: Vec<Violation> = self
            .previous
            .filter(|previous| previous.cluster_ref == self.spec.cluster_ref)
            .map(refused)
            .unwrap_or_default();
        let added: Vec<Violation> = refused(self.spec)
            .into_iter()
            .filter(|violation| !before.contains(violation))
            .collect();
        if !added.is_empty() {
            return Decision::Invalid(added);
        }
        match self
            .quota()
            .and_then(|quota| quota_refusal(cluster, self.namespace, quota, used, self.spec))
        {
            Some(why) => Decision::Forbidden(why),
            None => Decision::Admitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ContainerResources;
    use crate::guardrails::Guardrails;
    use crate::quota::NamespaceQuotas;
    use crate::shared::{IntOrString, LabelSelector};
    use crate::testing::container_spec;

    fn cluster() -> LxdClusterSpec {
        let mut spec: LxdClusterSpec = serde_json::from_value(serde_json::json!({
            "endpoints": ["https://127.0.0.1:8443"]
        }))
        .unwrap();
        spec.guardrails = Some(Guardrails {
            allow_config_keys: vec!["security.nesting".into()],
            ..Guardrails::default()
        });
        spec.namespace_selector = Some(LabelSelector {
            match_labels: Some([("tenant".to_owned(), "yes".to_owned())].into()),
            match_expressions: None,
        });
        spec.quotas = Some(NamespaceQuotas {
            default: Some(Quota {
                containers: Some(2),
                cpu: Some(2.0),
                memory: None,
            }),
            namespaces: BTreeMap::new(),
        });
        spec
    }

    fn tenant() -> BTreeMap<String, String> {
        [("tenant".to_owned(), "yes".to_owned())].into()
    }

    fn sized(cpu: f64) -> LxdContainerSpec {
        let mut spec = container_spec();
        spec.resources = Some(ContainerResources {
            cpu: Some(cpu),
            memory: Some(IntOrString::String("64Mi".into())),
        });
        spec
    }

    fn with_config(mut spec: LxdContainerSpec, key: &str, value: &str) -> LxdContainerSpec {
        spec.config.insert(key.into(), value.into());
        spec
    }

    fn write<'a>(
        spec: &'a LxdContainerSpec,
        previous: Option<&'a LxdContainerSpec>,
        cluster: &'a LxdClusterSpec,
        labels: &'a BTreeMap<String, String>,
    ) -> ContainerWrite<'a> {
        ContainerWrite {
            pointer: "/spec",
            spec,
            previous,
            cluster: Some(cluster),
            namespace: "team-a",
            namespace_labels: labels,
        }
    }

    fn invalid_fields(decision: &Decision) -> Vec<String> {
        match decision {
            Decision::Invalid(violations) => violations.iter().map(|v| v.to_string()).collect(),
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn a_privileged_container_is_invalid_naming_the_key_and_an_ordinary_one_admitted() {
        let (cluster, labels) = (cluster(), tenant());
        let ordinary = with_config(sized(0.5), "security.nesting", "true");
        assert_eq!(
            write(&ordinary, None, &cluster, &labels).decide(Usage::default()),
            Decision::Admitted
        );
        let privileged = with_config(sized(0.5), "security.privileged", "true");
        let decision = write(&privileged, None, &cluster, &labels).decide(Usage::default());
        assert_eq!(decision.code(), 422);
        let fields = invalid_fields(&decision);
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert!(
            fields[0].starts_with(
                "spec.config[\"security.privileged\"]: \"true\": denied by cluster local's policy"
            ),
            "{fields:?}"
        );
    }

    #[test]
    fn a_set_is_named_under_its_template_and_holds_no_quota() {
        let (cluster, labels) = (cluster(), tenant());
        let privileged = with_config(container_spec(), "raw.lxc", "x");
        let set = ContainerWrite {
            pointer: container_spec_pointer("LxdContainerSet").unwrap(),
            ..write(&privileged, None, &cluster, &labels)
        };
        assert_eq!(set.quota(), None);
        assert!(
            invalid_fields(&set.decide(Usage::default()))[0]
                .starts_with("spec.template.spec.config[\"raw.lxc\"]")
        );
        assert_eq!(container_spec_pointer("LxdCluster"), None);
    }

    #[test]
    fn a_namespace_the_cluster_does_not_select_is_refused_naming_the_rule() {
        let cluster = cluster();
        let none = BTreeMap::new();
        let spec = sized(0.5);
        let decision = write(&spec, None, &cluster, &none).decide(Usage::default());
        assert!(
            invalid_fields(&decision)[0].contains(
                "namespace team-a is not admitted to cluster local (its namespaceSelector tenant=yes"
            ),
            "{decision:?}"
        );
        assert!(ContainerWrite::needs_namespace_labels(Some(&cluster)));
        assert!(!ContainerWrite::needs_namespace_labels(None));
    }

    #[test]
    fn an_update_keeping_a_value_now_denied_is_admitted_and_one_adding_another_is_not() {
        let (mut cluster, labels) = (cluster(), tenant());
        let nested = with_config(sized(0.5), "security.nesting", "true");
        // The policy tightened since the container was admitted.
        cluster.guardrails = None;
        let relabelled = nested.clone();
        assert_eq!(
            write(&relabelled, Some(&nested), &cluster, &labels).decide(Usage::default()),
            Decision::Admitted
        );
        let more = with_config(nested.clone(), "raw.lxc", "x");
        let fields = invalid_fields(
            &write(&more, Some(&nested), &cluster, &labels).decide(Usage::default()),
        );
        assert_eq!(fields.len(), 1, "only what the write adds: {fields:?}");
        assert!(fields[0].starts_with("spec.config[\"raw.lxc\"]"));
        // Moved to another cluster, it is checked anew.
        let mut moved = nested.clone();
        moved.cluster_ref.name = "other".into();
        assert_eq!(
            invalid_fields(
                &write(&moved, Some(&nested), &cluster, &labels).decide(Usage::default())
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_container_over_its_namespace_quota_is_forbidden_with_the_figures() {
        let (cluster, labels) = (cluster(), tenant());
        let spec = sized(0.5);
        let used = Usage {
            containers: 2,
            cpu: 1.0,
            memory: 0,
        };
        let create = write(&spec, None, &cluster, &labels);
        assert!(create.quota().is_some());
        let decision = create.decide(used);
        assert_eq!(decision.code(), 403);
        assert_eq!(
            decision,
            Decision::Forbidden(
                "exceeded quota of namespace team-a on cluster local: requested: containers=1,cpu=0.5, used: containers=2,cpu=1, limited: containers=2,cpu=2"
                    .into()
            )
        );
        // An update that asks for no more is not counted; one that asks more CPU is.
        let same = write(&spec, Some(&spec), &cluster, &labels);
        assert_eq!(same.quota(), None);
        assert_eq!(same.decide(used), Decision::Admitted);
        let bigger = sized(1.5);
        let grown = write(&bigger, Some(&spec), &cluster, &labels);
        assert!(grown.quota().is_some());
        assert!(matches!(
            grown.decide(Usage {
                containers: 1,
                cpu: 1.0,
                memory: 0
            }),
            Decision::Forbidden(_)
        ));
        // Under a CPU quota a container must say what it asks.
        let unmeasured = container_spec();
        assert!(matches!(
            write(&unmeasured, None, &cluster, &labels).decide(Usage::default()),
            Decision::Forbidden(why) if why.starts_with("must specify resources.cpu")
        ));
    }
}
