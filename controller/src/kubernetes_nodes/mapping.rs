//! Which Kubernetes Node each LXD member shares its host with: pure, from the LxdCluster's
//! `kubernetesNodes` and the Nodes there are.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use lxd_operator_crds::kubernetes_nodes::{KubernetesNodes, NodeMatch};

/// The label kubelet sets to its host's name.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Member name → Node name, for the members of `members` that have a Node among `nodes`. A
/// member named in `memberNodes` is mapped to that Node; with `matchBy: HostName`, another
/// member to the Node named as it is, or else labelled `kubernetes.io/hostname` as it is.
pub fn member_nodes<'n>(
    settings: &KubernetesNodes,
    members: impl IntoIterator<Item = &'n str>,
    nodes: &[&Node],
) -> BTreeMap<String, String> {
    let name_of = |node: &Node| node.metadata.name.clone().unwrap_or_default();
    let mut mapped = BTreeMap::new();
    for member in members {
        let named = settings
            .member_nodes
            .iter()
            .find(|entry| entry.member == member)
            .map(|entry| &entry.node);
        let node = match named {
            Some(named) => nodes
                .iter()
                .find(|node| node.metadata.name.as_deref() == Some(named.as_str())),
            None if settings.match_by == NodeMatch::HostName => nodes
                .iter()
                .find(|node| node.metadata.name.as_deref() == Some(member))
                .or_else(|| {
                    nodes.iter().find(|node| {
                        node.metadata
                            .labels
                            .as_ref()
                            .and_then(|labels| labels.get(HOSTNAME_LABEL))
                            .is_some_and(|host| host == member)
                    })
                }),
            None => None,
        };
        if let Some(node) = node {
            mapped.insert(member.to_owned(), name_of(node));
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::kubernetes_nodes::MemberNode;
    use serde_json::json;

    use super::*;

    fn node(name: &str, hostname: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {HOSTNAME_LABEL: hostname}}}),
        )
        .unwrap()
    }

    #[test]
    fn a_named_node_wins_then_the_node_name_then_the_hostname_label() {
        let nodes = [
            node("node1", "node1"),
            node("worker-b", "node2"),
            node("node3", "x"),
        ];
        let nodes: Vec<&Node> = nodes.iter().collect();
        let mut settings = KubernetesNodes::default();
        settings.member_nodes.push(MemberNode {
            member: "node3".into(),
            node: "worker-b".into(),
        });
        let mapped = member_nodes(&settings, ["node1", "node2", "node3", "node4"], &nodes);
        assert_eq!(
            mapped,
            BTreeMap::from([
                ("node1".to_owned(), "node1".to_owned()),
                ("node2".to_owned(), "worker-b".to_owned()),
                ("node3".to_owned(), "worker-b".to_owned()),
            ])
        );
        settings.match_by = NodeMatch::None;
        let only_named = member_nodes(&settings, ["node1", "node2", "node3"], &nodes);
        assert_eq!(only_named.len(), 1, "{only_named:?}");
        // A named Node that does not exist maps nothing.
        settings.member_nodes.push(MemberNode {
            member: "node1".into(),
            node: "gone".into(),
        });
        assert!(!member_nodes(&settings, ["node1"], &nodes).contains_key("node1"));
    }
}
