//! Scorer `spread`: fewer of the container's peers in the member's failure domain (and then on
//! the member) scores higher, so that a set of containers uses every failure domain before
//! doubling up. Peers are the operator's containers of the same namespace with the same labels
//! (all of its containers when the container has no labels).

use std::collections::BTreeMap;

use super::{Context, Scorer};
use crate::placement::model::Member;

#[derive(Debug, Default)]
pub(super) struct Spread;

impl Scorer for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn score(&self, context: &Context<'_>, candidates: &[&Member]) -> Vec<f64> {
        let request = context.request;
        let peers = context.snapshot.placed.iter().filter(|p| {
            p.name != request.name
                && (request.labels.is_empty()
                    || (p.namespace == request.namespace && p.labels == request.labels))
        });
        let (mut per_domain, mut per_member) = (
            BTreeMap::<String, f64>::new(),
            BTreeMap::<String, f64>::new(),
        );
        for peer in peers {
            *per_domain
                .entry(context.snapshot.failure_domain_of(&peer.member))
                .or_default() += 1.0;
            *per_member.entry(peer.member.clone()).or_default() += 1.0;
        }
        let max_domain = candidates
            .iter()
            .map(|m| per_domain.get(&m.failure_domain).copied().unwrap_or(0.0))
            .fold(0.0, f64::max);
        let max_member = candidates
            .iter()
            .map(|m| per_member.get(&m.name).copied().unwrap_or(0.0))
            .fold(0.0, f64::max);
        candidates
            .iter()
            .map(|m| {
                let domain = per_domain.get(&m.failure_domain).copied().unwrap_or(0.0);
                let member = per_member.get(&m.name).copied().unwrap_or(0.0);
                // The domain decides; the member breaks ties within it.
                80.0 * (1.0 - domain / (max_domain + 1.0))
                    + 20.0 * (1.0 - member / (max_member + 1.0))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn an_empty_failure_domain_scores_highest() {
        let mut snapshot = snapshot(vec![
            member("a1", "ra", 4.0, 8.0),
            member("a2", "ra", 4.0, 8.0),
            member("b1", "rb", 4.0, 8.0),
        ]);
        snapshot.placed = vec![placed("web-1", "web", "a1")];
        let mut wanted = request(1.0, 1.0);
        wanted.labels = [("app".to_owned(), "web".to_owned())].into();
        let context = context_for(&wanted, &snapshot);
        let candidates: Vec<&Member> = snapshot.members.iter().collect();
        let scores = scorer("spread").score(&context, &candidates);
        assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
    }
}
