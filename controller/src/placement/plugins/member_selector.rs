//! Filter `member-selector`: the member must match `placement.memberSelector` (a cluster group,
//! a failure domain, and labels from its `user.*` config).

use super::{Context, Filter, MemberRef, Reason};
use crate::placement::model::{Member, Request};
use crate::placement::selector;

#[derive(Debug, Default)]
pub(super) struct MemberSelector;

impl Filter for MemberSelector {
    fn name(&self) -> &'static str {
        "member-selector"
    }

    fn applies(&self, context: &Context<'_>) -> bool {
        context.request.placement.member_selector.is_some()
    }

    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        unselected(context.request, &member).map(Reason::Fixed)
    }
}

/// Why `member` does not match the request's `placement.memberSelector`, if it does not.
pub(super) fn unselected(request: &Request, member: &Member) -> Option<&'static str> {
    let wanted = request.placement.member_selector.as_ref()?;
    if !wanted.groups.is_empty() && !wanted.groups.iter().any(|g| member.groups.contains(g)) {
        return Some("not in the selected cluster groups");
    }
    if !wanted.failure_domains.is_empty()
        && !wanted.failure_domains.contains(&member.failure_domain)
    {
        return Some("not in the selected failure domains");
    }
    if let Some(labels) = &wanted.labels
        && !selector::matches(labels, &member.labels)
    {
        return Some("member labels do not match");
    }
    None
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::MemberSelector as Spec;
    use lxd_operator_crds::shared::LabelSelector;

    use super::super::testing::*;

    #[test]
    fn groups_failure_domains_and_labels_all_apply() {
        let mut ssd = member("node1", "rack1", 4.0, 8.0);
        ssd.groups = vec!["ssd".into()];
        ssd.labels = [("disk".to_owned(), "nvme".to_owned())].into();
        let hdd = member("node2", "rack2", 4.0, 8.0);
        let mut wanted = request(1.0, 1.0);
        wanted.placement.member_selector = Some(Spec {
            groups: vec!["ssd".into()],
            failure_domains: vec!["rack1".into()],
            labels: Some(LabelSelector {
                match_labels: Some([("disk".to_owned(), "nvme".to_owned())].into()),
                match_expressions: None,
            }),
        });
        let snapshot = snapshot(vec![]);
        let context = context_for(&wanted, &snapshot);
        let filter = filter("member-selector");
        assert_eq!(filter.filter(&context, alone(&ssd)), None);
        assert_eq!(
            reason(&*filter, &context, alone(&hdd)).as_deref(),
            Some("not in the selected cluster groups")
        );
    }
}
