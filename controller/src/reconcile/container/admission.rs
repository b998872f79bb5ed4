//! The cluster's guardrails, applied again before anything reaches LXD (the API server, or on
//! Kubernetes the operator's admission webhook, applied them at admission; a webhook skipped
//! under `failurePolicy: Ignore` or not installed, or a policy tightened since, is why this
//! check is here too). Pure.

use std::collections::BTreeMap;

use lxd_operator_crds::guardrails::{Violation, refusals};
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
