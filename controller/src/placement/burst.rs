//! Placing a burst: containers that wait for a decision at the same moment are decided largest
//! first, each counting the ones decided before it.
//!
//! One container at a time, no rule can keep members even: the last large container lands
//! where it lands, and the spread of allocation stays near the largest container over the mean
//! allocation per member. Decided largest first, the small ones come last and fill the gaps
//! (the "longest processing time first" rule of scheduling), so a burst of mixed sizes ends
//! balanced. The controller orders the decisions it has pending for a cluster with
//! [`burst_order`]; [`decide_burst`] does the same for a burst known whole.

use std::cmp::Ordering;

use super::model::{Request, Snapshot};
use super::policy::Policy;
use super::{Decision, Unschedulable, decide};

/// The order decisions of a burst are made in: more memory first, then more CPU (as scoring
/// counts them, a container without limits at the scoring defaults), then by namespace and
/// name, so that the order is total and the same every time.
pub fn burst_order(a: &Request, b: &Request) -> Ordering {
    let (size_a, size_b) = (
        a.resources.or_scoring_default(),
        b.resources.or_scoring_default(),
    );
    size_b
        .memory
        .total_cmp(&size_a.memory)
        .then_with(|| size_b.cpu.total_cmp(&size_a.cpu))
        .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
}

/// Decides every request of a burst on `snapshot`, largest first, each seeing the ones before
/// it as placed. The answers come back in the order of `requests`.
pub fn decide_burst(
    policy: &Policy,
    requests: &[Request],
    snapshot: &Snapshot,
    rotation: u64,
) -> Vec<Result<Decision, Unschedulable>> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| burst_order(&requests[a], &requests[b]));
    let mut working = snapshot.clone();
    let mut answers: Vec<Option<Result<Decision, Unschedulable>>> = vec![None; requests.len()];
    for (made, index) in order.into_iter().enumerate() {
        let request = &requests[index];
        let answer = decide(policy, request, &working, rotation + made as u64);
        if let Ok(decision) = &answer {
            working.land(&decision.member, request);
        }
        answers[index] = Some(answer);
    }
    answers.into_iter().flatten().collect()
}
