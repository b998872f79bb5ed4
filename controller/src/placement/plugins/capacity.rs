//! Filter `capacity`: the request must fit in what the member has, times the policy's
//! overcommit, minus what every instance on it is limited to (ours or not) and reservations.

use super::{Context, Filter, MemberRef, Reason};

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
        if !fits(
            wanted.memory,
            member.allocated.memory,
            member.capacity.memory,
            context.overcommit.memory,
        ) {
            return Some(Reason::Fixed("insufficient memory"));
        }
        if !fits(
            wanted.cpu,
            member.allocated.cpu,
            member.capacity.cpu,
            context.overcommit.cpu,
        ) {
            return Some(Reason::Fixed("insufficient cpu"));
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
}
