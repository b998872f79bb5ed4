//! What a Pod holds on its Node, counted as kube-scheduler counts it: pure, from the Pod
//! object alone.
//!
//! A Pod counts when it is bound (`spec.nodeName`) and not finished (phase neither `Succeeded`
//! nor `Failed`). Its request is, per resource, the larger of what its app containers ask
//! together (with restartable "sidecar" init containers, which run beside them) and what the
//! init containers need at their peak (each one-shot init container with the sidecars started
//! before it), plus the Pod's overhead: Kubernetes' `PodRequests` since 1.29. A container that
//! sets a limit but no request asks for its limit, as the API server's defaulting makes it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::placement::model::Resources;

/// The Node a Pod is bound to and what it requests there; `None` for a Pod that holds nothing
/// on any Node (not bound, or finished).
pub fn pod_requests(pod: &Pod) -> Option<(String, Resources)> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone().filter(|name| !name.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut requests = spec
        .containers
        .iter()
        .map(container_requests)
        .fold(Resources::default(), Resources::plus);
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let own = container_requests(init);
        let needed = if init.restart_policy.as_deref() == Some("Always") {
            // A sidecar keeps running beside the app containers.
            requests = requests.plus(own);
            sidecars = sidecars.plus(own);
            sidecars
        } else {
            own.plus(sidecars)
        };
        init_peak = max(init_peak, needed);
    }
    let overhead = spec
        .overhead
        .as_ref()
        .map_or_else(Resources::default, resources_of);
    Some((node, max(requests, init_peak).plus(overhead)))
}

/// What the Pods bound to each Node request, summed, by Node name.
pub fn requests_by_node<'p>(
    pods: impl IntoIterator<Item = &'p Pod>,
) -> BTreeMap<String, Resources> {
    let mut by_node: BTreeMap<String, Resources> = BTreeMap::new();
    for (node, requests) in pods.into_iter().filter_map(pod_requests) {
        let sum = by_node.entry(node).or_default();
        *sum = sum.plus(requests);
    }
    by_node
}

fn max(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu: a.cpu.max(b.cpu),
        memory: a.memory.max(b.memory),
    }
}

/// A container's requests; a resource it only limits asks for its limit.
fn container_requests(container: &Container) -> Resources {
    let Some(resources) = &container.resources else {
        return Resources::default();
    };
    let requests = resources.requests.as_ref();
    let limits = resources.limits.as_ref();
    let pick = |name: &str| {
        requests
            .and_then(|r| r.get(name))
            .or_else(|| limits.and_then(|l| l.get(name)))
            .map_or(0.0, quantity)
    };
    Resources {
        cpu: pick("cpu"),
        memory: pick("memory"),
    }
}

fn resources_of(list: &BTreeMap<String, Quantity>) -> Resources {
    Resources {
        cpu: list.get("cpu").map_or(0.0, quantity),
        memory: list.get("memory").map_or(0.0, quantity),
    }
}

/// The value of a Kubernetes quantity (`500m`, `2`, `1Gi`, `1e9`); 0 for one that cannot be
/// read (the API server would have refused it).
pub fn quantity(quantity: &Quantity) -> f64 {
    lxd_operator_crds::quantity::parse_quantity(&quantity.0).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;

    fn pod(spec: Value, phase: Option<&str>) -> Pod {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": spec});
        if let Some(phase) = phase {
            pod["status"] = json!({"phase": phase});
        }
        serde_json::from_value(pod).unwrap()
    }

    fn requests(spec: Value) -> Option<Resources> {
        pod_requests(&pod(spec, None)).map(|(_, r)| r)
    }

    fn container(name: &str, resources: Value) -> Value {
        json!({"name": name, "resources": resources})
    }

    #[test]
    fn app_containers_add_up_and_a_limit_alone_counts_as_the_request() {
        let counted = requests(json!({"nodeName": "node1", "containers": [
            container("a", json!({"requests": {"cpu": "500m", "memory": "1Gi"}})),
            container("b", json!({"limits": {"cpu": "1", "memory": "512Mi"}})),
            {"name": "c"},
        ]}));
        assert_eq!(
            counted,
            Some(Resources {
                cpu: 1.5,
                memory: 1.5 * GIB
            })
        );
    }

    #[test]
    fn init_containers_count_at_their_peak_and_sidecars_beside_the_app() {
        // App 1 CPU; a sidecar of 0.5 started before a one-shot init of 3: peak 3.5, while
        // the app runs 1.5; plus the overhead.
        let mut sidecar = container(
            "proxy",
            json!({"requests": {"cpu": "500m", "memory": "100Mi"}}),
        );
        sidecar["restartPolicy"] = json!("Always");
        let counted = requests(json!({"nodeName": "node1",
            "initContainers": [sidecar, container("migrate", json!({"requests": {"cpu": "3", "memory": "100Mi"}}))],
            "containers": [container("app", json!({"requests": {"cpu": "1", "memory": "2Gi"}}))],
            "overhead": {"cpu": "100m", "memory": "1Mi"},
        }))
        .unwrap();
        assert!((counted.cpu - 3.6).abs() < 1e-9, "{counted:?}");
        assert_eq!(counted.memory, 2.0 * GIB + 100.0 * MIB + MIB);
    }

    #[test]
    fn unbound_and_finished_pods_hold_nothing() {
        let containers = json!([container("a", json!({"requests": {"memory": "1Gi"}}))]);
        assert_eq!(requests(json!({"containers": containers})), None);
        let bound = json!({"nodeName": "node1", "containers": containers});
        for phase in ["Succeeded", "Failed"] {
            assert_eq!(pod_requests(&pod(bound.clone(), Some(phase))), None);
        }
        for phase in [None, Some("Pending"), Some("Running")] {
            assert!(pod_requests(&pod(bound.clone(), phase)).is_some());
        }
    }

    #[test]
    fn requests_sum_per_node() {
        let on = |node: &str, memory: &str| {
            pod(
                json!({"nodeName": node, "containers": [container("a", json!({"requests": {"memory": memory}}))]}),
                None,
            )
        };
        let pods = [on("a", "1Gi"), on("a", "2Gi"), on("b", "1G")];
        let by_node = requests_by_node(&pods);
        assert_eq!(by_node["a"].memory, 3.0 * GIB);
        assert_eq!(by_node["b"].memory, 1e9);
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        for (text, value) in [
            ("250m", 0.25),
            ("2", 2.0),
            ("1.5", 1.5),
            ("1Ki", 1024.0),
            ("1e3", 1000.0),
            ("x", 0.0),
        ] {
            assert_eq!(quantity(&Quantity(text.into())), value, "{text}");
        }
    }
}
