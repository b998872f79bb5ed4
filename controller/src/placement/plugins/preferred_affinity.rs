//! Scorer `preferred-affinity`: preferred affinity and anti-affinity terms, each counting with
//! its weight: a member near matching containers (affinity) or away from them (anti-affinity)
//! scores higher. Neutral (100 everywhere) when the container has no preferred terms.

use lxd_operator_crds::container::AffinityMode;

use super::{Context, Holders, MemberRef, Scorer};

#[derive(Debug, Default)]
pub(super) struct PreferredAffinity;

impl Scorer for PreferredAffinity {
    fn name(&self) -> &'static str {
        "preferred-affinity"
    }

    fn uniform(&self, context: &Context<'_>) -> Option<f64> {
        let placement = &context.request.placement;
        let preferred = placement
            .affinity
            .iter()
            .chain(&placement.anti_affinity)
            .any(|t| t.mode == AffinityMode::Preferred);
        (!preferred).then_some(100.0)
    }

    fn score(&self, context: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64> {
        let placement = &context.request.placement;
        let terms: Vec<(bool, &lxd_operator_crds::container::AffinityTerm, &Holders)> = placement
            .affinity
            .iter()
            .zip(&context.affinity)
            .map(|(t, h)| (true, t, h))
            .chain(
                placement
                    .anti_affinity
                    .iter()
                    .zip(&context.anti_affinity)
                    .map(|(t, h)| (false, t, h)),
            )
            .filter(|(_, t, _)| t.mode == AffinityMode::Preferred)
            .collect();
        let total_weight: f64 = terms
            .iter()
            .map(|(_, t, _)| f64::from(t.weight.unwrap_or(1)))
            .sum();
        if terms.is_empty() {
            return vec![100.0; candidates.len()];
        }
        candidates
            .iter()
            .map(|member| {
                let kept: f64 = terms
                    .iter()
                    .filter(|(near, term, holders)| {
                        holders.near(term.topology, context.snapshot, *member) == *near
                    })
                    .map(|(_, term, _)| f64::from(term.weight.unwrap_or(1)))
                    .sum();
                100.0 * kept / total_weight
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::{AffinityTerm, Topology};
    use lxd_operator_crds::shared::LabelSelector;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn preferred_anti_affinity_lowers_members_holding_matches() {
        let mut snapshot = snapshot(vec![
            member("node1", "d", 4.0, 8.0),
            member("node2", "d", 4.0, 8.0),
        ]);
        snapshot.set_placed(vec![placed("web-1", "web", "node1")]);
        let mut wanted = request(1.0, 1.0);
        wanted.placement.anti_affinity = vec![AffinityTerm {
            selector: LabelSelector {
                match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                match_expressions: None,
            },
            topology: Topology::Member,
            mode: AffinityMode::Preferred,
            weight: Some(50),
        }];
        let context = context_for(&wanted, &snapshot);
        assert_eq!(
            scorer("preferred-affinity").score(&context, &all(&snapshot)),
            [0.0, 100.0]
        );
    }
}
