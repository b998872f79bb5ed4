//! Scorer `spread`: fewer of the container's peers in the member's failure domain (and then on
//! the member) scores higher, so that a set of containers uses every failure domain before
//! doubling up. Peers are the operator's containers of the same namespace with the same labels
//! (all of its containers when the container has no labels).

use super::{Context, MemberRef, Scorer, matching_per_member, per_domain};

#[derive(Debug, Default)]
pub(super) struct Spread;

impl Scorer for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn score(&self, context: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64> {
        let request = context.request;
        let snapshot = context.snapshot;
        let (per_member, _) = matching_per_member(request, snapshot, |group| {
            request.labels.is_empty()
                || (group.namespace == request.namespace && group.labels == request.labels)
        });
        let domains = snapshot.failure_domains();
        let per_domain = per_domain(&per_member, domains);
        let domain_of = |m: &MemberRef<'_>| {
            domains
                .of(m.index)
                .and_then(|d| per_domain.get(d as usize))
                .map_or(0.0, |n| f64::from(*n))
        };
        let member_of = |m: &MemberRef<'_>| per_member.get(m.index).map_or(0.0, |n| f64::from(*n));
        let max_domain = candidates.iter().map(domain_of).fold(0.0, f64::max);
        let max_member = candidates.iter().map(member_of).fold(0.0, f64::max);
        candidates
            .iter()
            .map(|m| {
                let (domain, member) = (domain_of(m), member_of(m));
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

    #[test]
    fn an_empty_failure_domain_scores_highest() {
        let mut snapshot = snapshot(vec![
            member("a1", "ra", 4.0, 8.0),
            member("a2", "ra", 4.0, 8.0),
            member("b1", "rb", 4.0, 8.0),
        ]);
        snapshot.set_placed(vec![placed("web-1", "web", "a1")]);
        let mut wanted = request(1.0, 1.0);
        wanted.labels = [("app".to_owned(), "web".to_owned())].into();
        let context = context_for(&wanted, &snapshot);
        let scores = scorer("spread").score(&context, &all(&snapshot));
        assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
    }
}
