//! Filter `target`: a container pinned with `placement.target` goes to that member only.

use super::{Context, Filter, MemberRef, Reason};

#[derive(Debug, Default)]
pub(super) struct Target;

impl Filter for Target {
    fn name(&self) -> &'static str {
        "target"
    }

    fn applies(&self, context: &Context<'_>) -> bool {
        context.request.placement.target.is_some()
    }

    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        let target = context.request.placement.target.as_deref()?;
        (member.name != target).then_some(Reason::Fixed("not the pinned target"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn only_the_pinned_member_passes() {
        let mut pinned = request(1.0, 1.0);
        pinned.placement.target = Some("node2".into());
        let snapshot = snapshot(vec![]);
        let context = context_for(&pinned, &snapshot);
        let filter = filter("target");
        assert_eq!(
            filter.filter(&context, alone(&member("node2", "d", 1.0, 1.0))),
            None
        );
        assert!(
            filter
                .filter(&context, alone(&member("node1", "d", 1.0, 1.0)))
                .is_some()
        );
    }
}
