//! Filter `online`: only members LXD reports Online (not Offline, Evacuated, Blocked, ...) and
//! that are not cordoned in the LxdCluster's spec.

use super::{Context, Filter, MemberRef, Reason};
use crate::placement::model::Member;

#[derive(Debug, Default)]
pub(super) struct Online;

impl Filter for Online {
    fn name(&self) -> &'static str {
        "online"
    }

    fn filter(&self, _: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        if member.status != "Online" {
            Some(Reason::Text(member.status.to_lowercase()))
        } else {
            member.cordoned.then_some(Reason::Fixed("cordoned"))
        }
    }
}

/// Whether `member` takes new containers at all: online and not cordoned.
pub(super) fn available(member: &Member) -> bool {
    member.status == "Online" && !member.cordoned
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn offline_and_evacuated_members_are_left_out_with_their_status() {
        let mut offline = member("node2", "default", 4.0, 8.0);
        offline.status = "Offline".into();
        let snapshot = snapshot(vec![]);
        let wanted = request(1.0, 1.0);
        let context = context_for(&wanted, &snapshot);
        let filter = filter("online");
        assert_eq!(
            filter.filter(&context, alone(&member("node1", "default", 4.0, 8.0))),
            None
        );
        assert_eq!(
            reason(&*filter, &context, alone(&offline)).as_deref(),
            Some("offline")
        );
        let mut cordoned = member("node3", "default", 4.0, 8.0);
        cordoned.cordoned = true;
        assert_eq!(
            reason(&*filter, &context, alone(&cordoned)).as_deref(),
            Some("cordoned")
        );
    }
}
