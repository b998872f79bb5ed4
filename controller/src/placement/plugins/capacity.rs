//! Filter `capacity`: the request must fit in what the member has, times the policy's
//! overcommit, minus what every instance on it is limited to (ours or not) and reservations,
//! and minus what the Pods on its host request when a Kubernetes Node is mapped to it. A
//! member left out for what Pods hold says both parts
//! (`insufficient memory: 14.2 GiB of 16 GiB held, 11 GiB by pods`).

use super::{Context, Filter, MemberRef, Reason};
use crate::placement::model::{format_bytes, format_cores};

#[derive(Debug, Default)]
pub(super) struct Capacity;

impl Filter for Capacity {
    fn name(&self) -> &'static str {
        "capacity"
    }

    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        let wanted = context.request.resources;
        let fits = |requested: f64, allocated: f64, capacity: f64, ratio: f64| {
            requested <= 0.0 || capacity <= 0.0 || allocated + requested <= capacity * ratio + 1e-9
        };
        let held = member.held();
        if !fits(
            wanted.memory,
            held.memory,
            member.capacity.memory,
            context.overcommit.memory,
        ) {
            if member.pods.memory <= 0.0 {
                return Some(Reason::Fixed("insufficient memory"));
            }
            return Some(Reason::Text(format!(
                "insufficient memory: {} of {} held, {} by pods",
                format_bytes(held.memory),
                format_bytes(member.capacity.memory),
                format_bytes(member.pods.memory)
            )));
        }
        if !fits(
            wanted.cpu,
            held.cpu,
            member.capacity.cpu,
            context.overcommit.cpu,
        ) {
            if member.pods.cpu <= 0.0 {
                return Some(Reason::Fixed("insufficient cpu"));
            }
            return Some(Reason::Text(format!(
                "insufficient cpu: {} of {} cores held, {} by pods",
                format_cores(held.cpu),
                format_cores(member.capacity.cpu),
                format_cores(member.pods.cpu)
            )));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::Overcommit;
    use super::super::testing::*;
    use super::*;
    use crate::placement::model::Resources;

    #[test]
    fn what_is_allocated_counts_and_overcommit_stretches_capacity() {
        let mut full = member("node1", "d", 4.0, 8.0);
        full.allocated = Resources {
            cpu: 3.0,
            memory: gib(7.5),
        };
        let snapshot = snapshot(vec![]);
        let wanted = request(1.0, 1.0);
        let strict = Context::new(&wanted, &snapshot, Overcommit::default());
        let filter = filter("capacity");
        assert_eq!(
            reason(&*filter, &strict, alone(&full)).as_deref(),
            Some("insufficient memory")
        );
        assert_eq!(
            filter.filter(&strict, alone(&member("node2", "d", 4.0, 8.0))),
            None
        );
        let loose = Context::new(
            &wanted,
            &snapshot,
            Overcommit {
                cpu: 1.0,
                memory: 2.0,
            },
        );
        assert_eq!(filter.filter(&loose, alone(&full)), None);
        full.allocated.cpu = 3.5;
        assert_eq!(
            reason(&*filter, &loose, alone(&full)).as_deref(),
            Some("insufficient cpu")
        );
    }

    #[test]
    fn what_pods_request_on_the_members_node_counts_and_is_named() {
        let mut shared = member("node2", "d", 4.0, 16.0);
        shared.allocated.memory = gib(3.2);
        shared.pods = Resources {
            cpu: 1.0,
            memory: gib(11.0),
        };
        let snapshot = snapshot(vec![]);
        let filter = filter("capacity");
        let fits = request(1.0, 1.5);
        let context = Context::new(&fits, &snapshot, Overcommit::default());
        assert_eq!(filter.filter(&context, alone(&shared)), None);
        let too_big = request(1.0, 2.0);
        let context = Context::new(&too_big, &snapshot, Overcommit::default());
        assert_eq!(
            reason(&*filter, &context, alone(&shared)).as_deref(),
            Some("insufficient memory: 14.2 GiB of 16 GiB held, 11 GiB by pods")
        );
        let cpu_bound = request(3.5, 0.5);
        let context = Context::new(&cpu_bound, &snapshot, Overcommit::default());
        assert_eq!(
            reason(&*filter, &context, alone(&shared)).as_deref(),
            Some("insufficient cpu: 1 of 4 cores held, 1 by pods")
        );
    }
}
