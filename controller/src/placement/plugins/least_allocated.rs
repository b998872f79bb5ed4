//! Scorer `least-allocated`: the share of CPU and memory still free on the member once the
//! container's request is added to what every instance there is limited to (a container or
//! instance without a limit counts the scoring default, as Kubernetes counts pods without
//! requests).

use super::{Context, MemberRef, Scorer, free_share};
use crate::placement::model::Member;

#[derive(Debug, Default)]
pub(super) struct LeastAllocated;

/// Free share of the member after the request, 0 to 1, CPU and memory averaged.
pub(super) fn free_after(context: &Context<'_>, member: &Member) -> f64 {
    let after = member
        .scoring_allocated()
        .plus(context.request.resources.or_scoring_default());
    (free_share(after.cpu, member.capacity.cpu) + free_share(after.memory, member.capacity.memory))
        / 2.0
}

impl Scorer for LeastAllocated {
    fn name(&self) -> &'static str {
        "least-allocated"
    }

    fn score(&self, context: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64> {
        candidates
            .iter()
            .map(|m| 100.0 * free_after(context, m))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::placement::model::Resources;

    #[test]
    fn the_emptier_member_scores_higher() {
        let (mut busy, idle) = (member("busy", "d", 4.0, 8.0), member("idle", "d", 4.0, 8.0));
        busy.allocated = Resources {
            cpu: 2.0,
            memory: gib(4.0),
        };
        let snapshot = snapshot(vec![]);
        let wanted = request(1.0, 2.0);
        let context = context_for(&wanted, &snapshot);
        let scores = scorer("least-allocated").score(&context, &[alone(&busy), alone(&idle)]);
        assert_eq!(
            scores,
            [100.0 * (0.25 + 0.25) / 2.0, 100.0 * (0.75 + 0.75) / 2.0]
        );
    }
}
