//! Filter `anti-affinity`: required anti-affinity terms. The member (or its failure domain)
//! must not hold a container of this namespace matching a term's selector.

use lxd_operator_crds::container::AffinityMode;

use super::{Context, Filter, MemberRef, Reason};

#[derive(Debug, Default)]
pub(super) struct AntiAffinity;

impl Filter for AntiAffinity {
    fn name(&self) -> &'static str {
        "anti-affinity"
    }

    fn applies(&self, context: &Context<'_>) -> bool {
        context
            .request
            .placement
            .anti_affinity
            .iter()
            .any(|t| t.mode == AffinityMode::Required)
    }

    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        for (term, holders) in context
            .request
            .placement
            .anti_affinity
            .iter()
            .zip(&context.anti_affinity)
            .filter(|(t, _)| t.mode == AffinityMode::Required)
        {
            if holders.near(term.topology, context.snapshot, member) {
                return Some(Reason::Fixed("anti-affinity"));
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
    fn required_anti_affinity_keeps_away_by_member_or_failure_domain() {
        let mut snapshot = snapshot(vec![
            member("node1", "r1", 4.0, 8.0),
            member("node2", "r1", 4.0, 8.0),
            member("node3", "r2", 4.0, 8.0),
        ]);
        snapshot.set_placed(vec![placed("web-1", "web", "node1")]);
        let term = |topology| AffinityTerm {
            selector: LabelSelector {
                match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                match_expressions: None,
            },
            topology,
            mode: AffinityMode::Required,
            weight: None,
        };
        let filter = filter("anti-affinity");
        let passing = |topology| {
            let mut wanted = request(1.0, 1.0);
            wanted.placement.anti_affinity = vec![term(topology)];
            let context = context_for(&wanted, &snapshot);
            all(&snapshot)
                .into_iter()
                .filter(|m| filter.filter(&context, *m).is_none())
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(passing(Topology::Member), ["node2", "node3"]);
        assert_eq!(passing(Topology::FailureDomain), ["node3"]);
    }
}
