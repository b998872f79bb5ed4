//! Filter `architecture`: the member's CPU architecture must be the image's.

use super::{Context, Filter, MemberRef, Reason};

#[derive(Debug, Default)]
pub(super) struct Architecture;

impl Filter for Architecture {
    fn name(&self) -> &'static str {
        "architecture"
    }

    fn applies(&self, context: &Context<'_>) -> bool {
        context.request.architecture.is_some()
    }

    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        let wanted = context.request.architecture.as_deref()?;
        (!member.architecture.is_empty() && member.architecture != wanted)
            .then(|| Reason::Text(format!("architecture {}", member.architecture)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn a_member_of_another_architecture_is_left_out() {
        let mut arm = member("pi", "default", 4.0, 8.0);
        arm.architecture = "aarch64".into();
        let mut wanted = request(1.0, 1.0);
        wanted.architecture = Some("x86_64".into());
        let snapshot = snapshot(vec![]);
        let context = context_for(&wanted, &snapshot);
        let filter = filter("architecture");
        assert_eq!(
            reason(&*filter, &context, alone(&arm)).as_deref(),
            Some("architecture aarch64")
        );
        assert_eq!(
            filter.filter(&context, alone(&member("x", "default", 4.0, 8.0))),
            None
        );
    }
}
