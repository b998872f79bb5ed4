//! Filter `affinity`: required affinity terms. The member (or its failure domain) must already
//! hold a container of this namespace matching each term's selector. As in Kubernetes, when no
//! container matches anywhere and this container matches its own term, the first one may go
//! anywhere.

use lxd_operator_crds::container::AffinityMode;

use super::{Context, Filter, matching_per_member, shares_topology};
use crate::placement::model::Member;
use crate::placement::selector;

#[derive(Debug, Default)]
pub(super) struct Affinity;

impl Filter for Affinity {
    fn name(&self) -> &'static str {
        "affinity"
    }

    fn filter(&self, context: &Context<'_>, member: &Member) -> Option<String> {
        for term in context
            .request
            .placement
            .affinity
            .iter()
            .filter(|t| t.mode == AffinityMode::Required)
        {
            let holders = matching_per_member(context, &term.selector);
            if holders.is_empty() && selector::matches(&term.selector, &context.request.labels) {
                continue;
            }
            if !shares_topology(context, term.topology, member, &holders) {
                return Some("affinity not satisfied".to_owned());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::{AffinityTerm, Topology};
    use lxd_operator_crds::shared::LabelSelector;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn required_affinity_follows_the_matching_containers() {
        let mut snapshot = snapshot(vec![
            member("node1", "r1", 4.0, 8.0),
            member("node2", "r2", 4.0, 8.0),
        ]);
        snapshot.placed = vec![placed("db-1", "db", "node2")];
        let mut wanted = request(1.0, 1.0);
        wanted.placement.affinity = vec![AffinityTerm {
            selector: LabelSelector {
                match_labels: Some([("app".to_owned(), "db".to_owned())].into()),
                match_expressions: None,
            },
            topology: Topology::Member,
            mode: AffinityMode::Required,
            weight: None,
        }];
        let context = context_for(&wanted, &snapshot);
        let filter = filter("affinity");
        assert_eq!(filter.filter(&context, &snapshot.members[1]), None);
        assert!(filter.filter(&context, &snapshot.members[0]).is_some());
    }
}
