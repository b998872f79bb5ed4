//! Quotas: how much of a cluster each namespace may hold (containers, CPU, memory), checked
//! where a container is admitted. As a Kubernetes ResourceQuota: a request that would take a
//! namespace over its quota is refused with the figures, and when a CPU or memory quota holds,
//! every container must say how much it asks (`resources.cpu`, `resources.memory`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::container::LxdContainerSpec;
use crate::quantity::parse_bytes;
use crate::shared::{IntOrString, memory_quantity_schema};

/// How much of the cluster namespaces may hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceQuotas {
    /// The quota of every namespace that `namespaces` does not name. Without it, such
    /// namespaces are not limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Quota>,
    /// Quotas of named namespaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, Quota>,
}

/// What one namespace may hold on the cluster in total. A field left out is not limited.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// How many LxdContainers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<u32>,
    /// How many CPU cores, summed over `resources.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cpu: Option<f64>,
    /// How much memory, summed over `resources.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "memory_quantity_schema")]
    pub memory: Option<IntOrString>,
}

impl NamespaceQuotas {
    /// The quota of `namespace`, if it has one.
    pub fn of(&self, namespace: &str) -> Option<&Quota> {
        self.namespaces.get(namespace).or(self.default.as_ref())
    }
}

/// What containers hold, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// LxdContainers.
    pub containers: u32,
    /// CPU cores asked for.
    pub cpu: f64,
    /// Memory asked for, in bytes.
    pub memory: u64,
}

impl Usage {
    /// What `specs` hold together (memory that cannot be read counts as none: the schema and
    /// the controller refuse it).
    pub fn of<'a>(specs: impl IntoIterator<Item = &'a LxdContainerSpec>) -> Usage {
        specs.into_iter().fold(Usage::default(), |usage, spec| {
            let resources = spec.resources.clone().unwrap_or_default();
            Usage {
                containers: usage.containers + 1,
                cpu: usage.cpu + resources.cpu.unwrap_or(0.0),
                memory: usage.memory
                    + resources
                        .memory
                        .as_ref()
                        .and_then(|m| parse_bytes(m).ok())
                        .unwrap_or(0),
            }
        })
    }
}

/// One namespace's quota on a cluster, and what its containers hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceQuotaStatus {
    /// The namespace.
    pub namespace: String,
    /// Its quota.
    pub hard: Quota,
    /// What its LxdContainers on the cluster hold: how many, CPU cores and memory (bytes)
    /// summed over their `resources`.
    pub used: Quota,
}

/// What every namespace with a quota holds, from `containers` (namespace and spec of each
/// LxdContainer on the cluster): the namespaces `quotas` names, and those with containers when
/// a default quota holds. Sorted by namespace.
pub fn usage_by_namespace<'a>(
    quotas: &NamespaceQuotas,
    containers: impl IntoIterator<Item = (&'a str, &'a LxdContainerSpec)>,
) -> Vec<NamespaceQuotaStatus> {
    let mut specs: BTreeMap<&str, Vec<&LxdContainerSpec>> = quotas
        .namespaces
        .keys()
        .map(|namespace| (namespace.as_str(), Vec::new()))
        .collect();
    for (namespace, spec) in containers {
        if quotas.of(namespace).is_some() {
            specs.entry(namespace).or_default().push(spec);
        }
    }
    specs
        .into_iter()
        .filter_map(|(namespace, specs)| {
            let hard = quotas.of(namespace)?.clone();
            let usage = Usage::of(specs);
            Some(NamespaceQuotaStatus {
                namespace: namespace.to_owned(),
                hard,
                used: Quota {
                    containers: Some(usage.containers),
                    cpu: Some(usage.cpu),
                    memory: Some(IntOrString::String(usage.memory.to_string())),
                },
            })
        })
        .collect()
}

/// Why `asked` may not join `used` in `namespace` on `cluster` under `quota`, if it may not:
/// `exceeded quota of namespace team-a on cluster local: requested: containers=1,cpu=1, used:
/// containers=3,cpu=2, limited: containers=3,cpu=2`, or that the container must say how much it
/// asks.
pub fn quota_refusal(
    cluster: &str,
    namespace: &str,
    quota: &Quota,
    used: Usage,
    asked: &LxdContainerSpec,
) -> Option<String> {
    let resources = asked.resources.clone().unwrap_or_default();
    let mut missing = Vec::new();
    if quota.cpu.is_some() && resources.cpu.is_none() {
        missing.push("resources.cpu");
    }
    if quota.memory.is_some() && resources.memory.is_none() {
        missing.push("resources.memory");
    }
    if !missing.is_empty() {
        return Some(format!(
            "must specify {}: namespace {namespace} has a quota of it on cluster {cluster}",
            missing.join(", ")
        ));
    }
    let request = Usage::of([asked]);
    let limit_memory = quota.memory.as_ref().and_then(|m| parse_bytes(m).ok());
    let mut requested = Vec::new();
    let mut in_use = Vec::new();
    let mut limited = Vec::new();
    let mut over = false;
    if let Some(limit) = quota.containers {
        over |= used.containers + request.containers > limit;
        requested.push(format!("containers={}", request.containers));
        in_use.push(format!("containers={}", used.containers));
        limited.push(format!("containers={limit}"));
    }
    if let Some(limit) = quota.cpu {
        over |= used.cpu + request.cpu > limit + 1e-9;
        requested.push(format!("cpu={}", request.cpu));
        in_use.push(format!("cpu={}", used.cpu));
        limited.push(format!("cpu={limit}"));
    }
    if let (Some(limit), Some(written)) = (limit_memory, quota.memory.as_ref()) {
        over |= used.memory + request.memory > limit;
        requested.push(format!("memory={}", request.memory));
        in_use.push(format!("memory={}", used.memory));
        limited.push(format!("memory={limit} ({written})"));
    }
    over.then(|| {
        format!(
            "exceeded quota of namespace {namespace} on cluster {cluster}: requested: {}, used: {}, limited: {}",
            requested.join(","),
            in_use.join(","),
            limited.join(",")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ContainerResources;
    use crate::testing::container_spec;

    fn sized(cpu: f64, memory: &str) -> LxdContainerSpec {
        let mut spec = container_spec();
        spec.resources = Some(ContainerResources {
            cpu: Some(cpu),
            memory: Some(IntOrString::String(memory.into())),
        });
        spec
    }

    #[test]
    fn a_fourth_container_over_a_quota_of_three_and_two_cpus_is_refused_with_the_figures() {
        let quota = Quota {
            containers: Some(3),
            cpu: Some(2.0),
            memory: None,
        };
        let three = [sized(0.5, "64Mi"), sized(0.5, "64Mi"), sized(0.5, "64Mi")];
        let used = Usage::of(three.iter());
        assert_eq!(used.containers, 3);
        assert_eq!(
            quota_refusal("local", "team-a", &quota, used, &sized(0.5, "64Mi")).unwrap(),
            "exceeded quota of namespace team-a on cluster local: requested: containers=1,cpu=0.5, used: containers=3,cpu=1.5, limited: containers=3,cpu=2"
        );
        let two = Usage::of(three[..2].iter());
        assert_eq!(
            quota_refusal("local", "team-a", &quota, two, &sized(1.0, "64Mi")),
            None
        );
        assert!(quota_refusal("local", "team-a", &quota, two, &sized(1.5, "64Mi")).is_some());
    }

    #[test]
    fn usage_is_reported_for_named_namespaces_and_those_under_the_default_quota() {
        let quotas: NamespaceQuotas = serde_json::from_value(serde_json::json!({
            "default": {"containers": 2},
            "namespaces": {"team-a": {"containers": 3, "cpu": 2}, "idle": {"memory": "1Gi"}}
        }))
        .unwrap();
        let (a, b) = (sized(0.5, "64Mi"), sized(1.0, "128Mi"));
        let statuses =
            usage_by_namespace(&quotas, [("team-a", &a), ("team-a", &b), ("team-b", &a)]);
        let names: Vec<&str> = statuses.iter().map(|s| s.namespace.as_str()).collect();
        assert_eq!(names, ["idle", "team-a", "team-b"]);
        assert_eq!(statuses[0].used.containers, Some(0));
        assert_eq!(statuses[1].hard.containers, Some(3));
        assert_eq!(statuses[1].used.containers, Some(2));
        assert_eq!(statuses[1].used.cpu, Some(1.5));
        assert_eq!(
            statuses[1].used.memory,
            Some(IntOrString::String((192u64 << 20).to_string()))
        );
        assert_eq!(statuses[2].hard.containers, Some(2));
    }

    #[test]
    fn under_a_cpu_or_memory_quota_a_container_must_say_what_it_asks() {
        let quota = Quota {
            memory: Some(IntOrString::String("1Gi".into())),
            ..Quota::default()
        };
        let refusal = quota_refusal(
            "local",
            "team-a",
            &quota,
            Usage::default(),
            &container_spec(),
        )
        .unwrap();
        assert!(
            refusal.starts_with("must specify resources.memory"),
            "{refusal}"
        );
        assert!(
            quota_refusal(
                "local",
                "team-a",
                &quota,
                Usage::default(),
                &sized(1.0, "2Gi")
            )
            .unwrap()
            .contains("memory=1073741824 (1Gi)")
        );
    }

    #[test]
    fn a_named_namespace_has_its_own_quota_and_the_others_the_default() {
        let quotas = NamespaceQuotas {
            default: Some(Quota {
                containers: Some(10),
                ..Quota::default()
            }),
            namespaces: [(
                "team-a".to_owned(),
                Quota {
                    containers: Some(3),
                    ..Quota::default()
                },
            )]
            .into(),
        };
        assert_eq!(quotas.of("team-a").unwrap().containers, Some(3));
        assert_eq!(quotas.of("team-b").unwrap().containers, Some(10));
        assert_eq!(NamespaceQuotas::default().of("team-b"), None);
    }
}
