//! Scorer `most-allocated` (bin-packing): the fullest member that still fits scores highest,
//! leaving other members free.

use super::least_allocated::free_after;
use super::{Context, MemberRef, Scorer};

#[derive(Debug, Default)]
pub(super) struct MostAllocated;

impl Scorer for MostAllocated {
    fn name(&self) -> &'static str {
        "most-allocated"
    }

    fn score(&self, context: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64> {
        candidates
            .iter()
            .map(|m| 100.0 * (1.0 - free_after(context, m)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::placement::model::Resources;

    #[test]
    fn the_fuller_member_scores_higher() {
        let (mut busy, idle) = (member("busy", "d", 4.0, 8.0), member("idle", "d", 4.0, 8.0));
        busy.allocated = Resources {
            cpu: 2.0,
            memory: gib(4.0),
        };
        let snapshot = snapshot(vec![]);
        let wanted = request(1.0, 2.0);
        let context = context_for(&wanted, &snapshot);
        let scores = scorer("most-allocated").score(&context, &[alone(&busy), alone(&idle)]);
        assert!(scores[0] > scores[1], "{scores:?}");
    }
}
