//! LXD beside Kubernetes on the same hosts: each scheduler sees what the other placed.
//!
//! - [`mapping`]: which Node each member shares its host with (pure).
//! - [`pod_requests`]: what the Pods bound to a Node request, as kube-scheduler counts it
//!   (pure).
//! - [`node_figures`]: what the operator writes on a mapped Node: LXD's figures and its
//!   `NoSchedule` taint past the threshold.
//!
//! Here: the Pods and Nodes as watched ([`KubeSide`]), which runs only when the feature is on
//! (`--kubernetes-nodes`, always in standalone mode where the embedded API server stores
//! them), and the pods' requests per member that placement counts beside LXD's instances.

pub mod mapping;
pub mod node_figures;
pub mod pod_requests;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use lxd_operator_crds::kubernetes_nodes::KubernetesNodes;

use crate::placement::model::Resources;

/// Whether a watch event is a bound Pod that finished or went.
fn frees_requests(event: &watcher::Event<Pod>) -> bool {
    let bound = |pod: &Pod| {
        pod.spec
            .as_ref()
            .is_some_and(|spec| spec.node_name.as_deref().is_some_and(|n| !n.is_empty()))
    };
    match event {
        watcher::Event::Delete(pod) => bound(pod),
        watcher::Event::Apply(pod) => bound(pod) && pod_requests::pod_requests(pod).is_none(),
        _ => false,
    }
}

/// The Pods and Nodes as last watched.
#[derive(Clone)]
pub struct KubeSide {
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Notified when a bound Pod finishes or goes: what it requested is free again.
    freed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for KubeSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSide").finish_non_exhaustive()
    }
}

impl KubeSide {
    /// Starts watching every Pod and Node (the watches run as tasks of their own).
    pub fn watch(client: &kube::Client) -> KubeSide {
        let (pods, pod_writer) = reflector::store();
        let (nodes, node_writer) = reflector::store();
        let freed = Arc::new(tokio::sync::Notify::new());
        let notify = freed.clone();
        let pod_changes =
            watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                // Only what counting requests reads is kept: a cluster's Pods are many.
                .modify(|pod: &mut Pod| {
                    pod.metadata.managed_fields = None;
                    pod.metadata.annotations = None;
                    if let Some(status) = pod.status.as_mut() {
                        *status = k8s_openapi::api::core::v1::PodStatus {
                            phase: status.phase.take(),
                            ..Default::default()
                        };
                    }
                })
                .reflect(pod_writer)
                .for_each(move |event| {
                    if let Ok(event) = &event
                        && frees_requests(event)
                    {
                        notify.notify_one();
                    }
                    async {}
                });
        let node_changes =
            watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .reflect(node_writer)
                .for_each(|_| async {});
        tokio::spawn(pod_changes);
        tokio::spawn(node_changes);
        KubeSide { pods, nodes, freed }
    }

    /// Returns when a bound Pod has finished or gone since the last call.
    pub async fn requests_freed(&self) {
        self.freed.notified().await;
    }

    /// Whether both watches have listed once, waiting at most `patience` for them: until then
    /// the Pods and Nodes seen are not all there are.
    pub async fn synced(&self, patience: std::time::Duration) -> bool {
        let both = async {
            self.pods.wait_until_ready().await.is_ok()
                && self.nodes.wait_until_ready().await.is_ok()
        };
        tokio::time::timeout(patience, both).await.unwrap_or(false)
    }

    /// Member → Node name, for the members of `members` mapped by `settings`.
    pub fn member_nodes<'m>(
        &self,
        settings: &KubernetesNodes,
        members: impl IntoIterator<Item = &'m str>,
    ) -> BTreeMap<String, String> {
        let nodes = self.nodes.state();
        let nodes: Vec<&Node> = nodes.iter().map(Arc::as_ref).collect();
        mapping::member_nodes(settings, members, &nodes)
    }

    /// What the Pods bound to each mapped member's Node request, by member name.
    pub fn pods_by_member(
        &self,
        member_nodes: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Resources> {
        if member_nodes.is_empty() {
            return BTreeMap::new();
        }
        let mapped: std::collections::BTreeSet<&str> =
            member_nodes.values().map(String::as_str).collect();
        // Only the Pods of mapped Nodes are counted: a Kubernetes cluster has many more.
        let pods = self.pods.state();
        let by_node = pod_requests::requests_by_node(pods.iter().map(Arc::as_ref).filter(|pod| {
            pod.spec
                .as_ref()
                .and_then(|spec| spec.node_name.as_deref())
                .is_some_and(|node| mapped.contains(node))
        }));
        member_nodes
            .iter()
            .map(|(member, node)| {
                (
                    member.clone(),
                    by_node.get(node).copied().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Every Node as last watched.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    /// The Node `name` as last watched.
    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&reflector::ObjectRef::new(name))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"nodeName": node, "containers": [{"name": "a"}]},
            "status": {"phase": phase}}))
        .unwrap()
    }

    #[test]
    fn a_bound_pod_that_finishes_or_goes_frees_its_requests() {
        use watcher::Event::{Apply, Delete};
        assert!(frees_requests(&Apply(pod(Some("node1"), "Succeeded"))));
        assert!(frees_requests(&Delete(pod(Some("node1"), "Running"))));
        assert!(!frees_requests(&Apply(pod(Some("node1"), "Running"))));
        assert!(!frees_requests(&Delete(pod(None, "Pending"))));
    }
}
