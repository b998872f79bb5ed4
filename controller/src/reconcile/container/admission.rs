//! The cluster's guardrails, applied again before anything reaches LXD (the API server, or on
//! Kubernetes the operator's admission webhook, applied them at admission; a webhook skipped
//! under `failurePolicy: Ignore` or not installed, or a policy tightened since, is why this
//! check is here too). Pure.

use std::collections::BTreeMap;

use std::sync::Arc;

use lxd_operator_crds::guardrails::{Violation, refusals};
use lxd_operator_crds::quota::{Usage, quota_refusal};
use lxd_operator_crds::{LxdCluster, LxdContainer};

/// What the guardrails say of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Admission {
    /// Nothing it asks is refused.
    Admitted,
    /// It asks what is refused and has no instance: none is made.
    Refused { message: String },
    /// It asks what is refused now, but may have an instance from before the policy
    /// tightened: that instance is left as it is, neither changed nor made again.
    WouldNowBeRefused { message: String },
}

/// Checks `container` against the namespace selector and guardrails of `cluster` (the safe
/// defaults when the cluster is not known yet or sets none). `namespace_labels`: the labels of
/// the container's namespace. `placed`: the container has (or had) a member.
pub(super) fn admit(
    container: &LxdContainer,
    cluster: Option<&LxdCluster>,
    namespace_labels: &BTreeMap<String, String>,
    placed: bool,
) -> Admission {
    let namespace = container.metadata.namespace.as_deref().unwrap_or("default");
    let violations = refusals(
        &container.spec.cluster_ref.name,
        cluster.map(|c| &c.spec),
        namespace,
        namespace_labels,
        "spec",
        &container.spec,
    );
    if violations.is_empty() {
        return Admission::Admitted;
    }
    let message = describe(&violations);
    if placed {
        Admission::WouldNowBeRefused {
            message: format!("would now be refused: {message}; its instance is left as it is"),
        }
    } else {
        Admission::Refused { message }
    }
}

/// Why `container`, not placed yet, waits: it would take its namespace over its quota on
/// `cluster`, counting the namespace's containers on that cluster that came before it (older
/// first, then by name). The API server refuses such a container at admission; on a
/// Kubernetes without that admission the first ones created fit and the others wait here,
/// with nothing made in LXD, until room frees or the quota grows.
pub(super) fn over_quota(
    container: &LxdContainer,
    cluster: &LxdCluster,
    containers: &[Arc<LxdContainer>],
) -> Option<String> {
    let namespace = container.metadata.namespace.as_deref().unwrap_or("default");
    let quota = cluster.spec.quotas.as_ref()?.of(namespace)?;
    let cluster_name = &container.spec.cluster_ref.name;
    let order = |c: &LxdContainer| {
        (
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            c.metadata.name.clone(),
        )
    };
    let ours = order(container);
    let before = containers.iter().filter(|other| {
        other.metadata.namespace.as_deref().unwrap_or("default") == namespace
            && &other.spec.cluster_ref.name == cluster_name
            && other.metadata.uid != container.metadata.uid
            && order(other) < ours
    });
    quota_refusal(
        cluster_name,
        namespace,
        quota,
        Usage::of(before.map(|c| &c.spec)),
        &container.spec,
    )
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::LxdClusterSpec;
    use lxd_operator_crds::guardrails::Guardrails;

    use super::*;

    fn cluster(allow: &[&str]) -> LxdCluster {
        let mut spec: LxdClusterSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        spec.guardrails = Some(Guardrails {
            allow_config_keys: allow.iter().map(|k| (*k).to_owned()).collect(),
            ..Guardrails::default()
        });
        LxdCluster::new("local", spec)
    }

    #[test]
    fn without_admission_the_oldest_containers_fit_the_quota_and_the_others_wait() {
        let mut spec: LxdClusterSpec = serde_json::from_value(serde_json::json!({
            "quotas": {"namespaces": {"team-a": {"containers": 2, "cpu": 2}}}
        }))
        .unwrap();
        spec.guardrails = None;
        let local = LxdCluster::new("local", spec);
        let containers: Vec<Arc<LxdContainer>> = ["c-1", "c-2", "c-3"]
            .into_iter()
            .map(|name| {
                let mut c = LxdContainer::builder(name)
                    .namespace("team-a")
                    .uid(name)
                    .cpu(0.5)
                    .build();
                // Made at the same second: by name.
                c.metadata.creation_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-12-05T01:00:00Z".parse().unwrap(),
                    ));
                Arc::new(c)
            })
            .collect();
        assert_eq!(over_quota(&containers[0], &local, &containers), None);
        assert_eq!(over_quota(&containers[1], &local, &containers), None);
        let third = over_quota(&containers[2], &local, &containers).expect("waits");
        assert_eq!(
            third,
            "exceeded quota of namespace team-a on cluster local: requested: containers=1,cpu=0.5, used: containers=2,cpu=1, limited: containers=2,cpu=2"
        );
        let other_namespace = LxdContainer::builder("c-9")
            .namespace("team-b")
            .cpu(9.0)
            .build();
        assert_eq!(over_quota(&other_namespace, &local, &containers), None);
    }

    #[test]
    fn a_container_asking_what_the_policy_refuses_is_not_created_and_one_admitted_before_is_left_alone()
     {
        let nested = LxdContainer::builder("ci")
            .config("security.nesting", "true")
            .build();
        let no_labels = BTreeMap::new();
        assert_eq!(
            admit(
                &nested,
                Some(&cluster(&["security.nesting"])),
                &no_labels,
                false
            ),
            Admission::Admitted
        );
        let tightened = cluster(&[]);
        let Admission::Refused { message } = admit(&nested, Some(&tightened), &no_labels, false)
        else {
            panic!("refused");
        };
        assert!(
            message.starts_with(
                "spec.config[\"security.nesting\"]: \"true\": denied by cluster local's policy"
            ),
            "{message}"
        );
        assert!(matches!(
            admit(&nested, Some(&tightened), &no_labels, true),
            Admission::WouldNowBeRefused { .. }
        ));
        // A namespace the cluster does not select.
        let mut closed = cluster(&["security.nesting"]);
        closed.spec.namespace_selector = Some(lxd_operator_crds::shared::LabelSelector {
            match_labels: Some([("tenant".to_owned(), "yes".to_owned())].into()),
            match_expressions: None,
        });
        let Admission::Refused { message } = admit(&nested, Some(&closed), &no_labels, false)
        else {
            panic!("refused");
        };
        assert!(
            message.contains("namespace default is not admitted to cluster local"),
            "{message}"
        );
        assert!(matches!(
            admit(&nested, None, &no_labels, false),
            Admission::Refused { .. }
        ));
    }
}
