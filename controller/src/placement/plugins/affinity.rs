//! Filter `affinity`: required affinity terms. The member (or its failure domain) must already
//! hold a container of this namespace matching each term's selector. As in Kubernetes, when no
//! container matches anywhere and this container matches its own term, the first one may go
//! anywhere.

use lxd_operator_crds::container::AffinityMode;

use super::{Context, Filter, MemberRef, Reason};
use crate::placement::selector;

#[derive(Debug, Default)]
pub(super) struct Affinity;

impl Filter for Affinity {
    fn name(&self) -> &'static str {
        "affinity"
    }

    fn applies(&self, context: &Context<'_>) -> bool {
        context
            .request
            .placement
            .affinity
            .iter()
            .any(|t| t.mode == AffinityMode::Required)
    }

    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        for (term, holders) in context
            .request
            .placement
            .affinity
            .iter()
            .zip(&context.affinity)
            .filter(|(t, _)| t.mode == AffinityMode::Required)
        {
            if holders.total == 0 && selector::matches(&term.selector, &context.request.labels) {
                continue;
            }
            if !holders.near(term.topology, context.snapshot, member) {
                return Some(Reason::Fixed("affinity not satisfied"));
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
        snapshot.set_placed(vec![placed("db-1", "db", "node2")]);
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
        assert_eq!(filter.filter(&context, at(&snapshot, 1)), None);
        assert!(filter.filter(&context, at(&snapshot, 0)).is_some());
    }
}
