//! The disruption budget a set gives its children: a voluntary disruption of a child (a move
//! off a drained member) begins only while fewer than the set's `maxUnavailable` children are
//! unavailable, as Kubernetes' eviction API respects PodDisruptionBudgets. A container of no
//! set has no budget.
//!
//! Unavailable: not Ready, being deleted, being moved (recorded in status), missing (fewer
//! children than replicas), or holding a disruption granted here that its status does not show
//! yet. Granting is one step under a lock, so two children of one set that ask at the same
//! moment cannot both take the last unit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::api::Api;
use kube::{Resource, ResourceExt};
use lxd_operator_crds::{LxdContainer, LxdContainerSet};

use super::super::context::Context;
use super::super::set::children::is_ready;

/// Disruptions granted and not yet visible in the children's status, per set.
#[derive(Debug, Default)]
pub struct Budgets {
    granted: Arc<Mutex<HashMap<String, HashSet<String>>>>,
}

/// A granted disruption; dropping it returns the unit to the set's budget (by then the
/// child's status shows the disruption, or it is over).
#[derive(Debug)]
pub struct Disruption {
    granted: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    set: String,
    child: String,
}

impl Drop for Disruption {
    fn drop(&mut self) {
        if let Ok(mut granted) = self.granted.lock()
            && let Some(children) = granted.get_mut(&self.set)
        {
            children.remove(&self.child);
            if children.is_empty() {
                granted.remove(&self.set);
            }
        }
    }
}

/// Why one more child of a set may not be disrupted now, if it may not: `siblings` are the
/// set's other children, `held` the disruptions granted and not yet in their status.
fn over_budget(
    siblings: &[Arc<LxdContainer>],
    held: &HashSet<String>,
    replicas: usize,
    max_unavailable: usize,
) -> Option<String> {
    let mut unavailable: Vec<String> = siblings
        .iter()
        .filter(|c| is_unavailable(c, held))
        .map(|c| c.name_any())
        .collect();
    unavailable.sort();
    let missing = replicas.saturating_sub(siblings.len() + 1);
    let count = unavailable.len() + missing;
    if count < max_unavailable {
        return None;
    }
    if missing > 0 {
        unavailable.push(format!("{missing} missing"));
    }
    Some(format!(
        "allows {max_unavailable} unavailable children and has {count} ({})",
        unavailable.join(", ")
    ))
}

fn is_unavailable(child: &LxdContainer, held: &HashSet<String>) -> bool {
    !is_ready(child)
        || child.status.as_ref().is_some_and(|s| s.moving.is_some())
        || child
            .metadata
            .uid
            .as_ref()
            .is_some_and(|uid| held.contains(uid))
}

/// How many more of a set's `children` may be disrupted now: its `maxUnavailable` less those
/// unavailable (missing ones included), as a disruption is granted.
pub(crate) fn disruptions_left(
    children: &[Arc<LxdContainer>],
    replicas: usize,
    max_unavailable: usize,
) -> usize {
    let unavailable = children
        .iter()
        .filter(|c| is_unavailable(c, &HashSet::new()))
        .count()
        + replicas.saturating_sub(children.len());
    max_unavailable.max(1).saturating_sub(unavailable)
}

/// Why a disruption must wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget(pub String);

impl Budgets {
    /// Grants `container` a disruption if its set's budget allows one now. `Ok(None)`: the
    /// container belongs to no set (or its set is gone), nothing to hold.
    pub async fn disrupt(
        &self,
        container: &LxdContainer,
        ctx: &Context,
    ) -> Result<Result<Option<Disruption>, OverBudget>, kube::Error> {
        let Some(owner) = container
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == LxdContainerSet::kind(&()))
            .cloned()
        else {
            return Ok(Ok(None));
        };
        let namespace = container.namespace().unwrap_or_default();
        let sets: Api<LxdContainerSet> = Api::namespaced(ctx.client.clone(), &namespace);
        let Some(set) = sets.get_opt(&owner.name).await? else {
            return Ok(Ok(None));
        };
        if set.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
            return Ok(Ok(None));
        }
        let max_unavailable = set
            .spec
            .update_strategy
            .max_unavailable(set.spec.replicas)
            .max(1) as usize;
        let child = container.metadata.uid.clone().unwrap_or_default();
        let siblings: Vec<Arc<LxdContainer>> = ctx
            .containers
            .state()
            .into_iter()
            .filter(|c| {
                c.metadata.uid.as_deref() != Some(child.as_str())
                    && c.owner_references()
                        .iter()
                        .any(|o| o.controller == Some(true) && o.uid == owner.uid)
            })
            .collect();
        let Ok(mut granted) = self.granted.lock() else {
            return Ok(Err(OverBudget(
                "the budget's bookkeeping failed".to_owned(),
            )));
        };
        let held = granted.entry(owner.uid.clone()).or_default();
        let replicas = usize::try_from(set.spec.replicas).unwrap_or(0);
        if let Some(why) = over_budget(&siblings, held, replicas, max_unavailable) {
            return Ok(Err(OverBudget(format!("set {} {why}", owner.name))));
        }
        held.insert(child.clone());
        Ok(Ok(Some(Disruption {
            granted: self.granted.clone(),
            set: owner.uid,
            child,
        })))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use lxd_operator_crds::container::LxdContainerStatus;
    use lxd_operator_crds::testing::container_spec;

    use super::*;

    fn child(name: &str, ready: bool) -> Arc<LxdContainer> {
        let mut container = LxdContainer::new(name, container_spec());
        container.metadata.uid = Some(format!("uid-{name}"));
        container.status = Some(LxdContainerStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "Test".into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::now(),
                ),
                observed_generation: None,
            }],
            ..LxdContainerStatus::default()
        });
        Arc::new(container)
    }

    #[test]
    fn a_child_may_be_disrupted_only_while_its_set_has_fewer_than_max_unavailable_down() {
        let all_ready = [child("web-1", true), child("web-2", true)];
        assert_eq!(over_budget(&all_ready, &HashSet::new(), 3, 1), None);

        let one_down = [child("web-1", false), child("web-2", true)];
        let why = over_budget(&one_down, &HashSet::new(), 3, 1).unwrap();
        assert_eq!(why, "allows 1 unavailable children and has 1 (web-1)");
        assert_eq!(over_budget(&one_down, &HashSet::new(), 3, 2), None);

        // A disruption granted a moment ago counts before status shows it.
        let granted = HashSet::from(["uid-web-2".to_owned()]);
        assert!(over_budget(&all_ready, &granted, 3, 1).is_some());

        // What a rebalancing round may take of the set at once.
        let all = [
            child("web-1", true),
            child("web-2", true),
            child("web-3", true),
        ];
        assert_eq!(disruptions_left(&all, 3, 1), 1);
        assert_eq!(disruptions_left(&all, 3, 2), 2);
        assert_eq!(disruptions_left(&one_down, 2, 2), 1);
        assert_eq!(disruptions_left(&all, 4, 1), 0, "one missing");

        // A child that does not exist (yet) is unavailable too.
        let one_missing = [child("web-1", true)];
        let why = over_budget(&one_missing, &HashSet::new(), 3, 1).unwrap();
        assert!(why.contains("1 missing"), "{why}");
    }
}
