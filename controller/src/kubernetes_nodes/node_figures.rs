//! What the operator writes on a mapped Node so that kube-scheduler keeps clear of what LXD
//! holds: its figures as annotations, and past the threshold a `NoSchedule` taint of its own.
//! [`node_patch`] decides (pure); [`patch_node`] writes. Only our own annotation keys and our
//! own taint are changed; the taints kubelet and others set are written back as they were
//! read, under a resourceVersion precondition, so that a taint added meanwhile is never lost
//! (the write fails with a conflict and is made again at the next sync).

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams};
use lxd_operator_crds::kubernetes_nodes::{
    CPU_ANNOTATION, MEMBER_ANNOTATION, MEMORY_ANNOTATION, PRESSURE_TAINT, SHARE_ANNOTATION,
};
use serde_json::{Value, json};

use crate::placement::model::Resources;

/// The field manager of the operator's Node writes.
const FIELD_MANAGER: &str = "lxd-operator";

/// What LXD holds on a member's host, beside what the member has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LxdShare {
    /// What LXD's instances are limited to.
    pub allocated: Resources,
    /// What the member has.
    pub capacity: Resources,
}

impl LxdShare {
    /// LXD's share of the host in percent: of its CPU or its memory, whichever is higher.
    pub fn percent(&self) -> f64 {
        let share = |held: f64, has: f64| if has > 0.0 { 100.0 * held / has } else { 0.0 };
        share(self.allocated.cpu, self.capacity.cpu)
            .max(share(self.allocated.memory, self.capacity.memory))
    }
}

/// The merge patch that brings `node` to what `share` says (`member` is `<cluster>/<member>`),
/// or `None` when it is there already. The taint is on while the share is above
/// `threshold_percent`.
pub fn node_patch(
    node: &Node,
    member: &str,
    share: &LxdShare,
    threshold_percent: u32,
) -> Option<Value> {
    let percent = share.percent();
    let annotations = json!({
        MEMBER_ANNOTATION: member,
        CPU_ANNOTATION: format_cpu(share.allocated.cpu),
        MEMORY_ANNOTATION: format!("{}", share.allocated.memory.round() as u64),
        SHARE_ANNOTATION: format!("{}", percent.round() as u64),
    });
    let current = node.metadata.annotations.clone().unwrap_or_default();
    let annotations_differ = annotations
        .as_object()
        .into_iter()
        .flatten()
        .any(|(key, value)| current.get(key).map(String::as_str) != value.as_str());
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.clone())
        .unwrap_or_default();
    let tainted = taints.iter().any(|taint| taint.key == PRESSURE_TAINT);
    let pressed = percent > f64::from(threshold_percent);
    if !annotations_differ && tainted == pressed {
        return None;
    }
    let mut patch = json!({"metadata": {
        "resourceVersion": node.metadata.resource_version,
        "annotations": annotations,
    }});
    if tainted != pressed {
        let mut kept: Vec<Taint> = taints
            .into_iter()
            .filter(|taint| taint.key != PRESSURE_TAINT)
            .collect();
        if pressed {
            kept.push(Taint {
                key: PRESSURE_TAINT.to_owned(),
                value: Some(format!("{}", percent.round() as u64)),
                effect: "NoSchedule".to_owned(),
                time_added: None,
            });
        }
        patch["spec"] = json!({"taints": kept});
    }
    Some(patch)
}

/// The merge patch that takes our figures and taint off a Node the operator no longer maps to
/// `member` (`<cluster>/<member>`: the member was unmapped, or the cluster's `kubernetesNodes`
/// removed); `None` when the Node does not carry that member's figures.
pub fn release_patch(node: &Node, member: &str) -> Option<Value> {
    let annotations = node.metadata.annotations.as_ref()?;
    if annotations.get(MEMBER_ANNOTATION).map(String::as_str) != Some(member) {
        return None;
    }
    let mut patch = json!({"metadata": {
        "resourceVersion": node.metadata.resource_version,
        "annotations": {
            MEMBER_ANNOTATION: null, CPU_ANNOTATION: null, MEMORY_ANNOTATION: null, SHARE_ANNOTATION: null,
        },
    }});
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.clone())
        .unwrap_or_default();
    if taints.iter().any(|taint| taint.key == PRESSURE_TAINT) {
        let kept: Vec<Taint> = taints
            .into_iter()
            .filter(|taint| taint.key != PRESSURE_TAINT)
            .collect();
        patch["spec"] = json!({"taints": kept});
    }
    Some(patch)
}

/// The member (`<cluster>/<member>`) whose figures a Node carries, if any.
pub fn figures_of(node: &Node) -> Option<&str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(MEMBER_ANNOTATION)
        .map(String::as_str)
}

/// CPU cores as a quantity: whole cores plainly, a fraction in millicores.
fn format_cpu(cores: f64) -> String {
    let millis = (cores * 1000.0).round() as u64;
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Writes `patch` (from [`node_patch`]) to the Node `name`. A conflict (the Node changed since
/// it was read) is an error like any other: the next sync reads it again.
pub async fn patch_node(
    client: &kube::Client,
    name: &str,
    patch: &Value,
) -> Result<(), kube::Error> {
    Api::<Node>::all(client.clone())
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(patch),
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn node(taints: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "node1", "resourceVersion": "7"}, "spec": {"taints": taints}})).unwrap()
    }

    fn share(memory_gib: f64) -> LxdShare {
        LxdShare {
            allocated: Resources {
                cpu: 1.0,
                memory: memory_gib * GIB,
            },
            capacity: Resources {
                cpu: 8.0,
                memory: 16.0 * GIB,
            },
        }
    }

    fn with(node: &Node, patch: &Value) -> Node {
        let mut value = serde_json::to_value(node).unwrap();
        json_patch::merge(&mut value, patch);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn past_the_threshold_our_taint_joins_kubelets_and_goes_again_below_it() {
        let kubelets = json!([{"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}]);
        let calm = node(kubelets.clone());
        let patch = node_patch(&calm, "lxd/node1", &share(4.0), 80).unwrap();
        assert!(patch.get("spec").is_none(), "{patch}");
        assert_eq!(patch["metadata"]["annotations"][SHARE_ANNOTATION], "25");
        assert_eq!(
            patch["metadata"]["annotations"][MEMORY_ANNOTATION],
            (4.0 * GIB).to_string()
        );
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let annotated = with(&calm, &patch);
        assert_eq!(node_patch(&annotated, "lxd/node1", &share(4.0), 80), None);
        let full = node_patch(&annotated, "lxd/node1", &share(14.0), 80).unwrap();
        let taints = full["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 2, "{full}");
        assert_eq!(taints[0]["key"], "node.kubernetes.io/disk-pressure");
        assert_eq!(taints[1]["key"], PRESSURE_TAINT);
        assert_eq!(taints[1]["effect"], "NoSchedule");
        let tainted = with(&annotated, &full);
        assert_eq!(node_patch(&tainted, "lxd/node1", &share(14.0), 80), None);
        let eased = node_patch(&tainted, "lxd/node1", &share(12.0), 80).unwrap();
        assert_eq!(eased["spec"]["taints"], kubelets);
    }

    #[test]
    fn an_unmapped_node_loses_our_figures_and_taint_and_keeps_the_rest() {
        let kubelets = json!([{"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}]);
        let calm = node(kubelets.clone());
        let tainted = with(
            &calm,
            &node_patch(&calm, "lxd/node1", &share(14.0), 80).unwrap(),
        );
        assert_eq!(figures_of(&tainted), Some("lxd/node1"));
        assert_eq!(release_patch(&tainted, "lxd/node2"), None);
        let released = with(&tainted, &release_patch(&tainted, "lxd/node1").unwrap());
        assert_eq!(figures_of(&released), None);
        assert!(released.metadata.annotations.unwrap_or_default().is_empty());
        assert_eq!(
            serde_json::to_value(released.spec.unwrap().taints).unwrap(),
            kubelets
        );
        assert_eq!(release_patch(&calm, "lxd/node1"), None);
    }

    #[test]
    fn the_share_is_the_higher_of_cpu_and_memory() {
        let mut busy_cpu = share(1.0);
        busy_cpu.allocated.cpu = 7.0;
        assert_eq!(busy_cpu.percent(), 87.5);
        assert_eq!(format_cpu(1.5), "1500m");
        assert_eq!(format_cpu(2.0), "2");
    }
}
