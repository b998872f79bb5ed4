//! Scorer `least-loaded`: live usage. The share of the member's CPU and memory its instances
//! (ours or not) do not use now, from LXD's per-member metrics, and of its CPUs not busy by its
//! 1-minute load average where the LXD version reports one. Members that share one host report
//! the same host figures, so the per-member instance usage is what tells them apart.
//! What the Pods on a mapped Kubernetes Node request counts as used: LXD does not see them,
//! and kube-scheduler holds that much for them.

use super::{Context, MemberRef, Scorer, free_share};

#[derive(Debug, Default)]
pub(super) struct LeastLoaded;

impl Scorer for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn score(&self, _: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64> {
        candidates
            .iter()
            .map(|m| {
                let (mut sum, mut count) = (
                    free_share(m.usage.cpu + m.pods.cpu, m.capacity.cpu)
                        + free_share(m.usage.memory + m.pods.memory, m.capacity.memory),
                    2.0,
                );
                if let Some(load) = m.load1 {
                    sum += free_share(load, m.capacity.cpu);
                    count += 1.0;
                }
                100.0 * sum / count
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::placement::model::Resources;

    #[test]
    fn a_member_whose_instances_use_less_scores_higher() {
        let (mut hot, cool) = (member("hot", "d", 4.0, 8.0), member("cool", "d", 4.0, 8.0));
        hot.usage = Resources {
            cpu: 3.0,
            memory: gib(6.0),
        };
        hot.load1 = Some(4.0);
        let snapshot = snapshot(vec![]);
        let wanted = request(1.0, 1.0);
        let context = context_for(&wanted, &snapshot);
        let scores = scorer("least-loaded").score(&context, &[alone(&hot), alone(&cool)]);
        assert_eq!(scores[1], 100.0);
        assert!(scores[0] < 20.0, "{scores:?}");
    }

    #[test]
    fn a_member_whose_node_is_full_of_pods_scores_low_though_lxd_shows_it_empty() {
        let (mut shared, empty) = (
            member("shared", "d", 4.0, 8.0),
            member("empty", "d", 4.0, 8.0),
        );
        shared.pods = Resources {
            cpu: 1.0,
            memory: gib(7.2),
        };
        let snapshot = snapshot(vec![]);
        let wanted = request(0.5, 0.5);
        let context = context_for(&wanted, &snapshot);
        let scores = scorer("least-loaded").score(&context, &[alone(&shared), alone(&empty)]);
        assert!(scores[0] < scores[1] - 30.0, "{scores:?}");
    }
}
