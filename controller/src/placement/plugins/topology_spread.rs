//! Filter and scorer `topology-spread`: `placement.topologySpreadConstraints`, as Kubernetes'
//! PodTopologySpread.
//!
//! A constraint counts the containers of the request's namespace that match its
//! `labelSelector` (without one: the container's peers as the `spread` scorer knows them, the
//! containers with the same labels, or every container of the namespace when it has none), the
//! request itself left out, in each domain of its topology key: `member`, `failureDomain`, or a
//! member label such as `zone`. A member without the label is in no domain.
//!
//! - `DoNotSchedule` (the filter): a member passes when the count in its domain, plus one if the
//!   request itself matches the selector, minus the smallest count over the eligible domains,
//!   is at most `maxSkew`. Members without the key do not pass ("no zone label").
//! - `ScheduleAnyway` (the scorer): fewer matching containers in the member's domains (summed
//!   over these constraints) scores higher, from 0 to 100 over the candidates; members without
//!   a key score 0. With no such constraint every member scores 0: the scorer changes no
//!   ranking and adds nothing to the totals explanations show.
//!
//! Eligible domains (those the minimum is taken over) are the domains of the members that take
//! new containers at all (online, not cordoned) and match the container's `memberSelector`, as
//! Kubernetes takes the minimum over nodes that pass node affinity. Unlike Kubernetes, every
//! container in a domain counts, on whatever member of it; capacity does not make a domain
//! ineligible (a full domain holds the others back, as a full zone does in Kubernetes).
//!
//! Counts come from the snapshot's per-member counts of placed containers grouped by labels,
//! summed per domain once per decision ([`SpreadCounts::count`]); the filter then costs one
//! lookup per member.

use lxd_operator_crds::container::{
    TOPOLOGY_KEY_FAILURE_DOMAIN, TOPOLOGY_KEY_MEMBER, TopologySpreadConstraint, WhenUnsatisfiable,
};

use super::member_selector::unselected;
use super::online::available;
use super::{Context, Filter, MemberRef, Reason, Scorer, matching_per_member, per_domain};
use crate::placement::model::{Domains, Request, Snapshot};
use crate::placement::selector;

/// Domains and counts shown in an explanation line.
const SHOWN_DOMAINS: usize = 5;

#[derive(Debug, Default)]
pub(super) struct TopologySpread;

/// What a topology key's domains are.
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    /// Each member is its own domain (numbered as the members).
    Member,
    /// Failure domains.
    FailureDomain(&'a Domains),
    /// A member label's values; `None` when no member has the label.
    Label(Option<&'a Domains>),
}

/// One constraint's counts for a decision.
#[derive(Debug)]
pub(super) struct SpreadCounts<'a> {
    key: Key<'a>,
    /// Matching containers per domain number.
    per_domain: Vec<u32>,
    /// The smallest count over the eligible domains (0 when none is eligible).
    min: u32,
    /// 1 when the request matches the constraint's selector: placing it adds one.
    self_match: u32,
}

impl<'a> SpreadCounts<'a> {
    /// Counts the matching containers per domain of `constraint`'s key.
    pub(super) fn count(
        request: &Request,
        snapshot: &'a Snapshot,
        constraint: &TopologySpreadConstraint,
    ) -> SpreadCounts<'a> {
        let key = match constraint.topology_key.as_str() {
            TOPOLOGY_KEY_MEMBER => Key::Member,
            TOPOLOGY_KEY_FAILURE_DOMAIN => Key::FailureDomain(snapshot.failure_domains()),
            label => Key::Label(snapshot.label_domains(label)),
        };
        let selector = constraint.label_selector.as_ref();
        let (per_member, _) = matching_per_member(request, snapshot, |group| {
            group.namespace == request.namespace
                && match selector {
                    Some(selector) => selector::matches(selector, &group.labels),
                    None => request.labels.is_empty() || group.labels == request.labels,
                }
        });
        let per_domain = match key {
            Key::Member => per_member,
            Key::FailureDomain(domains) | Key::Label(Some(domains)) => {
                per_domain(&per_member, domains)
            }
            Key::Label(None) => Vec::new(),
        };
        let mut counts = SpreadCounts {
            key,
            per_domain,
            min: 0,
            self_match: selector
                .is_none_or(|s| selector::matches(s, &request.labels))
                .into(),
        };
        counts.min = snapshot
            .members()
            .iter()
            .enumerate()
            .filter(|(_, member)| available(member) && unselected(request, member).is_none())
            .filter_map(|(index, _)| counts.in_domain_of(index))
            .min()
            .unwrap_or(0);
        counts
    }

    /// The domain of the member at `index`.
    fn domain_of(&self, index: usize) -> Option<u32> {
        match self.key {
            Key::Member => (index < self.per_domain.len()).then_some(index as u32),
            Key::FailureDomain(domains) | Key::Label(Some(domains)) => domains.of(index),
            Key::Label(None) => None,
        }
    }

    /// The count in the domain of the member at `index`.
    fn in_domain_of(&self, index: usize) -> Option<u32> {
        self.domain_of(index)
            .and_then(|domain| self.per_domain.get(domain as usize).copied())
    }

    /// `zone: a 3, b 2 (min 2, maxSkew 1)`: the counts that decide, for the explanation.
    fn summary(&self, constraint: &TopologySpreadConstraint) -> String {
        let key = &constraint.topology_key;
        let skew = constraint.max_skew;
        match self.key {
            Key::Member => {
                let max = self.per_domain.iter().copied().max().unwrap_or(0);
                format!(
                    "topology spread member: {} to {} per member (maxSkew {skew})",
                    self.min, max
                )
            }
            Key::Label(None) => format!("topology spread {key}: no member has the label"),
            Key::FailureDomain(domains) | Key::Label(Some(domains)) => {
                let mut shown: Vec<String> = self
                    .per_domain
                    .iter()
                    .enumerate()
                    .take(SHOWN_DOMAINS)
                    .map(|(number, count)| format!("{} {count}", domains.name(number as u32)))
                    .collect();
                if self.per_domain.len() > SHOWN_DOMAINS {
                    shown.push(format!("{} more", self.per_domain.len() - SHOWN_DOMAINS));
                }
                format!(
                    "topology spread {key}: {} (min {}, maxSkew {skew})",
                    shown.join(", "),
                    self.min
                )
            }
        }
    }
}

/// Why a member breaks a `DoNotSchedule` constraint: kept as numbers, written out only when
/// shown or counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skew {
    /// The member lacks the constraint's key (a member label).
    NoKey {
        /// The constraint's position in the request's `topologySpreadConstraints`.
        constraint: usize,
    },
    /// Placing the container in the member's domain would spread more unevenly than allowed.
    TooMany {
        /// The constraint's position in the request's `topologySpreadConstraints`.
        constraint: usize,
        /// The member's domain number.
        domain: u32,
        /// Matching containers in it now.
        count: u32,
        /// The smallest count over the eligible domains.
        min: u32,
    },
}

impl Skew {
    /// `topology spread zone: a has 3, min 1 (maxSkew 1)`; for members, whose names stand
    /// beside the reason, `topology spread member: has 2, min 0 (maxSkew 1)`, so that members
    /// left out for the same counts are counted together.
    pub fn text(&self, request: &Request, snapshot: &Snapshot) -> String {
        let constraints = &request.placement.topology_spread_constraints;
        match *self {
            Skew::NoKey { constraint } => {
                let key = constraints
                    .get(constraint)
                    .map_or("topology", |c| c.topology_key.as_str());
                format!("no {key} label")
            }
            Skew::TooMany {
                constraint,
                domain,
                count,
                min,
            } => {
                let Some(constraint) = constraints.get(constraint) else {
                    return "topology spread".to_owned();
                };
                let key = constraint.topology_key.as_str();
                let skew = constraint.max_skew;
                let name = match key {
                    TOPOLOGY_KEY_MEMBER => "",
                    TOPOLOGY_KEY_FAILURE_DOMAIN => snapshot.failure_domains().name(domain),
                    label => snapshot
                        .label_domains(label)
                        .map_or("", |domains| domains.name(domain)),
                };
                if name.is_empty() {
                    format!("topology spread {key}: has {count}, min {min} (maxSkew {skew})")
                } else {
                    format!("topology spread {key}: {name} has {count}, min {min} (maxSkew {skew})")
                }
            }
        }
    }
}

/// The constraints of `context`'s request with `mode`, beside their counts.
fn constraints<'c>(
    context: &'c Context<'_>,
    mode: WhenUnsatisfiable,
) -> impl Iterator<Item = (usize, &'c TopologySpreadConstraint, &'c SpreadCounts<'c>)> {
    context
        .request
        .placement
        .topology_spread_constraints
        .iter()
        .zip(&context.spread)
        .enumerate()
        .filter(move |(_, (constraint, _))| constraint.when_unsatisfiable == mode)
        .map(|(position, (constraint, counts))| (position, constraint, counts))
}

/// The explanation lines of the constraints with `mode`, if any.
fn explain(context: &Context<'_>, mode: WhenUnsatisfiable) -> Option<String> {
    let lines: Vec<String> = constraints(context, mode)
        .map(|(_, constraint, counts)| counts.summary(constraint))
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

impl Filter for TopologySpread {
    fn name(&self) -> &'static str {
        "topology-spread"
    }

    fn applies(&self, context: &Context<'_>) -> bool {
        constraints(context, WhenUnsatisfiable::DoNotSchedule)
            .next()
            .is_some()
    }

    fn filter(&self, context: &Context<'_>, member: MemberRef<'_>) -> Option<Reason> {
        for (position, constraint, counts) in constraints(context, WhenUnsatisfiable::DoNotSchedule)
        {
            let Some(domain) = counts.domain_of(member.index) else {
                return Some(Reason::Skew(Skew::NoKey {
                    constraint: position,
                }));
            };
            let count = counts.per_domain.get(domain as usize).copied().unwrap_or(0);
            if count + counts.self_match > counts.min + constraint.max_skew {
                return Some(Reason::Skew(Skew::TooMany {
                    constraint: position,
                    domain,
                    count,
                    min: counts.min,
                }));
            }
        }
        None
    }

    fn explain(&self, context: &Context<'_>) -> Option<String> {
        explain(context, WhenUnsatisfiable::DoNotSchedule)
    }
}

impl Scorer for TopologySpread {
    fn name(&self) -> &'static str {
        "topology-spread"
    }

    fn uniform(&self, context: &Context<'_>) -> Option<f64> {
        constraints(context, WhenUnsatisfiable::ScheduleAnyway)
            .next()
            .is_none()
            .then_some(0.0)
    }

    fn score(&self, context: &Context<'_>, candidates: &[MemberRef<'_>]) -> Vec<f64> {
        let soft: Vec<_> = constraints(context, WhenUnsatisfiable::ScheduleAnyway).collect();
        if soft.is_empty() {
            return vec![0.0; candidates.len()];
        }
        // Matching containers in the member's domains, over the soft constraints; none when it
        // lacks a key.
        let raw: Vec<Option<u64>> = candidates
            .iter()
            .map(|member| {
                soft.iter()
                    .map(|(_, _, counts)| counts.in_domain_of(member.index).map(u64::from))
                    .sum()
            })
            .collect();
        let least = raw.iter().flatten().copied().min().unwrap_or(0);
        let most = raw.iter().flatten().copied().max().unwrap_or(0);
        raw.iter()
            .map(|count| match count {
                None => 0.0,
                Some(_) if most == least => 100.0,
                Some(count) => 100.0 * (most - count) as f64 / (most - least) as f64,
            })
            .collect()
    }

    fn explain(&self, context: &Context<'_>) -> Option<String> {
        explain(context, WhenUnsatisfiable::ScheduleAnyway)
    }
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::container::TopologySpreadConstraint;

    use super::super::testing::*;
    use super::*;
    use crate::placement::model::Member;

    fn zoned(name: &str, zone: Option<&str>) -> Member {
        let mut member = member(name, "default", 8.0, 16.0);
        if let Some(zone) = zone {
            member.labels = [("zone".to_owned(), zone.to_owned())].into();
        }
        member
    }

    fn web(constraints: Vec<TopologySpreadConstraint>) -> Request {
        let mut wanted = request(0.5, 0.5);
        wanted.labels = [("app".to_owned(), "web".to_owned())].into();
        wanted.placement.topology_spread_constraints = constraints;
        wanted
    }

    #[test]
    fn a_zone_holding_more_than_max_skew_over_the_emptiest_is_left_out_with_its_counts() {
        let mut snapshot = snapshot(vec![
            zoned("node1", Some("a")),
            zoned("node2", Some("a")),
            zoned("node3", Some("b")),
            zoned("node4", None),
        ]);
        snapshot.set_placed(vec![
            placed("web-1", "web", "node1"),
            placed("web-2", "web", "node2"),
            placed("web-3", "web", "node3"),
            placed("db-1", "db", "node3"),
        ]);
        let wanted = web(vec![spread_over("zone", WhenUnsatisfiable::DoNotSchedule)]);
        let context = context_for(&wanted, &snapshot);
        let filter = filter("topology-spread");
        let reasons: Vec<Option<String>> = all(&snapshot)
            .into_iter()
            .map(|m| reason(&*filter, &context, m))
            .collect();
        let over = "topology spread zone: a has 2, min 1 (maxSkew 1)".to_owned();
        assert_eq!(
            reasons,
            [
                Some(over.clone()),
                Some(over),
                None,
                Some("no zone label".to_owned())
            ]
        );
        assert_eq!(
            filter.explain(&context).as_deref(),
            Some("topology spread zone: a 2, b 1 (min 1, maxSkew 1)")
        );
    }

    #[test]
    fn the_minimum_is_over_members_that_take_containers_and_match_the_member_selector() {
        let mut snapshot = snapshot(vec![
            zoned("node1", Some("a")),
            zoned("node2", Some("b")),
            zoned("node3", Some("c")),
        ]);
        snapshot.set_placed(vec![
            placed("web-1", "web", "node1"),
            placed("web-2", "web", "node2"),
        ]);
        let wanted = web(vec![spread_over("zone", WhenUnsatisfiable::DoNotSchedule)]);
        let filter = filter("topology-spread");
        let passing = |snapshot: &Snapshot| {
            let context = context_for(&wanted, snapshot);
            all(snapshot)
                .into_iter()
                .filter(|m| filter.filter(&context, *m).is_none())
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        };
        // Zone c is empty: only it may take the next one.
        assert_eq!(passing(&snapshot), ["node3"]);
        // Zone c's only member is cordoned: c is not eligible, the minimum is 1.
        snapshot.members_mut()[2].cordoned = true;
        assert_eq!(passing(&snapshot), ["node1", "node2", "node3"]);
    }

    #[test]
    fn schedule_anyway_scores_emptier_domains_higher_and_is_neutral_without_constraints() {
        let mut snapshot = snapshot(vec![
            zoned("node1", Some("a")),
            zoned("node2", Some("b")),
            zoned("node3", None),
        ]);
        snapshot.set_placed(vec![
            placed("web-1", "web", "node1"),
            placed("web-2", "web", "node1"),
        ]);
        let scorer = scorer("topology-spread");
        let soft = web(vec![spread_over("zone", WhenUnsatisfiable::ScheduleAnyway)]);
        let context = context_for(&soft, &snapshot);
        assert_eq!(scorer.score(&context, &all(&snapshot)), [0.0, 100.0, 0.0]);
        let plain = web(vec![]);
        let context = context_for(&plain, &snapshot);
        assert_eq!(scorer.score(&context, &all(&snapshot)), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn without_a_selector_the_peers_with_the_same_labels_count_and_the_request_itself_not() {
        let mut snapshot = snapshot(vec![zoned("node1", Some("a")), zoned("node2", Some("b"))]);
        snapshot.set_placed(vec![
            placed("web-1", "web", "node1"),
            placed("db-1", "db", "node2"),
            placed("db-2", "db", "node2"),
            // An earlier decision for the request itself.
            placed("new", "web", "node1"),
        ]);
        let mut peers = spread_over("zone", WhenUnsatisfiable::DoNotSchedule);
        peers.label_selector = None;
        let wanted = web(vec![peers]);
        let context = context_for(&wanted, &snapshot);
        let filter = filter("topology-spread");
        // a has 1 (web-1), b has 0 (the db containers are no peers): a + 1 - 0 > 1.
        assert!(filter.filter(&context, at(&snapshot, 0)).is_some());
        assert_eq!(filter.filter(&context, at(&snapshot, 1)), None);
    }
}
