//! The cluster reconciler's step beside Kubernetes: per member, what LXD and the Pods on its
//! Node hold (metrics), and on each mapped Node LXD's figures and, past the threshold, our
//! `NoSchedule` taint ([`crate::kubernetes_nodes::node_figures`]).

use kube::ResourceExt;
use lxd_operator_crds::LxdCluster;
use lxd_operator_crds::cluster::MemberStatus;

use super::super::context::Context;
use crate::kubernetes_nodes::KubeSide;
use crate::kubernetes_nodes::node_figures::{
    LxdShare, figures_of, node_patch, patch_node, release_patch,
};
use crate::placement::model::Resources;

/// Records each member's allocations, and tells each mapped Node what LXD holds on its host.
/// A Node that cannot be written now is written at the next sync (the cluster is refreshed
/// early for it).
pub(super) async fn tell_nodes(cluster: &LxdCluster, members: &[MemberStatus], ctx: &Context) {
    let name = cluster.name_any();
    let allocated_of = |member: &MemberStatus| {
        member.allocated.as_ref().map(|a| Resources {
            cpu: a.cpus,
            memory: a.memory_bytes as f64,
        })
    };
    for member in members {
        if let Some(allocated) = allocated_of(member) {
            ctx.metrics.observe_member_allocation(
                &name,
                &member.name,
                "lxd",
                allocated.cpu,
                allocated.memory,
            );
        }
    }
    let Some(side) = &ctx.kube_side else {
        return;
    };
    let member_nodes = match &cluster.spec.kubernetes_nodes {
        Some(settings) => side.member_nodes(settings, members.iter().map(|m| m.name.as_str())),
        None => Default::default(),
    };
    release_unmapped(&name, &member_nodes, side, ctx).await;
    let Some(settings) = &cluster.spec.kubernetes_nodes else {
        return;
    };
    let pods = side.pods_by_member(&member_nodes);
    for member in members {
        let Some(node_name) = member_nodes.get(&member.name) else {
            continue;
        };
        let held_by_pods = pods.get(&member.name).copied().unwrap_or_default();
        ctx.metrics.observe_member_allocation(
            &name,
            &member.name,
            "pods",
            held_by_pods.cpu,
            held_by_pods.memory,
        );
        // An offline member's figures are old: its Node is left as it is.
        let (Some(allocated), Some(capacity), true) = (
            allocated_of(member),
            member.capacity.as_ref(),
            member.status == "Online",
        ) else {
            continue;
        };
        let share = LxdShare {
            allocated,
            capacity: Resources {
                cpu: f64::from(capacity.cpus),
                memory: capacity.memory_bytes as f64,
            },
        };
        let Some(node) = side.node(node_name) else {
            continue;
        };
        let Some(patch) = node_patch(
            &node,
            &format!("{name}/{}", member.name),
            &share,
            settings.taint_threshold_percent,
        ) else {
            continue;
        };
        match patch_node(&ctx.client, node_name, &patch).await {
            Ok(()) => {
                if patch.get("spec").is_some() {
                    tracing::info!(cluster = %name, member = %member.name, node = %node_name, share = share.percent(), "Node taint {}", if share.percent() > f64::from(settings.taint_threshold_percent) { "added" } else { "removed" });
                }
            }
            Err(error) => {
                // Most often a conflict: the Node changed since it was watched.
                tracing::debug!(cluster = %name, node = %node_name, %error, "cannot write the Node's LXD figures now; again at the next sync");
                ctx.request_cluster_refresh(&name);
            }
        }
    }
}

/// Takes our figures and taint off the Nodes that carry those of a member of `cluster` that is
/// no longer mapped to them.
async fn release_unmapped(
    cluster: &str,
    member_nodes: &std::collections::BTreeMap<String, String>,
    side: &KubeSide,
    ctx: &Context,
) {
    let prefix = format!("{cluster}/");
    for node in side.nodes() {
        let node_name = node.name_any();
        let Some(member) = figures_of(&node).and_then(|m| m.strip_prefix(&prefix)) else {
            continue;
        };
        if member_nodes.get(member) == Some(&node_name) {
            continue;
        }
        let Some(patch) = release_patch(&node, &format!("{prefix}{member}")) else {
            continue;
        };
        match patch_node(&ctx.client, &node_name, &patch).await {
            Ok(()) => {
                tracing::info!(%cluster, %member, node = %node_name, "Node no longer mapped: LXD figures and taint removed");
            }
            Err(error) => {
                tracing::debug!(%cluster, node = %node_name, %error, "cannot release the Node now; again at the next sync");
                ctx.request_cluster_refresh(cluster);
            }
        }
    }
}
