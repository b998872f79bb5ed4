//! Scorer `fewest-instances`: the member with the fewest instances (ours or not) scores 100,
//! the one with the most 0 — what later LXD versions place by.

use super::{Context, MemberRef, Scorer};

#[derive(Debug, Default)]
pub(super) struct FewestInstances;

impl Scorer for FewestInstances {
    fn name(&self) -> &'static str {
        "fewest-instances"
    }

    fn score(&self, _: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64> {
        let most = candidates.iter().map(|m| m.instances).max().unwrap_or(0);
        let least = candidates.iter().map(|m| m.instances).min().unwrap_or(0);
        candidates
            .iter()
            .map(|m| {
                if most == least {
                    100.0
                } else {
                    100.0 * f64::from(most - m.instances) / f64::from(most - least)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn fewer_instances_score_higher() {
        let (mut a, mut b) = (member("a", "d", 1.0, 1.0), member("b", "d", 1.0, 1.0));
        a.instances = 4;
        b.instances = 1;
        let snapshot = snapshot(vec![]);
        let wanted = request(0.0, 0.0);
        let context = context_for(&wanted, &snapshot);
        assert_eq!(
            scorer("fewest-instances").score(&context, &[alone(&a), alone(&b)]),
            [0.0, 100.0]
        );
    }
}
