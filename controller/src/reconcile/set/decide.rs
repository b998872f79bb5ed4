//! What a set does next, from its spec and the children it has: which ordinals to create,
//! which children to delete (scale-down, replacement), which to update in place. Pure: the
//! reconciler reads the children, this decides, the reconciler carries the plan out and looks
//! again. Every decision is made from what is there, so a restarted operator decides the same.

use lxd_operator_crds::container::LxdContainerSpec;
use lxd_operator_crds::set::UpdateStrategyType;

/// One child as the set sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// Its name, `<set>-<ordinal>`.
    pub name: String,
    /// Its ordinal (None: an owned container whose name is not one of the set's).
    pub ordinal: Option<u32>,
    /// The template revision it was made from (or last updated in place to).
    pub revision: Option<String>,
    /// Its spec.
    pub spec: LxdContainerSpec,
    /// Its Ready condition is True (for the spec it has now).
    pub ready: bool,
    /// Being deleted.
    pub deleting: bool,
}

/// How a child made from one template reaches another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing of the spec differs.
    None,
    /// LXD applies the difference to the running instance (config keys that take effect live,
    /// resources, state) or the operator only reads it later (placement, for the next
    /// placement): the child is updated where it is.
    InPlace,
    /// The instance must be made anew (image, profiles, devices, ephemeral, cluster, config
    /// keys LXD reads only when an instance starts).
    Replace,
}

/// Config key prefixes whose changes LXD applies only when the container starts again (or
/// which change what the container is): a child with such a change is replaced, not updated.
const RESTART_CONFIG_PREFIXES: &[&str] = &[
    "security.",
    "raw.",
    "linux.",
    "limits.kernel.",
    "nvidia.",
    "environment.",
    "image.",
];

/// How `current` reaches `wanted`.
pub fn change(current: &LxdContainerSpec, wanted: &LxdContainerSpec) -> Change {
    if current == wanted {
        return Change::None;
    }
    let replaced = current.image != wanted.image
        || current.profiles != wanted.profiles
        || current.devices != wanted.devices
        || current.ephemeral != wanted.ephemeral
        || current.cluster_ref != wanted.cluster_ref
        || current.instance_name != wanted.instance_name
        || config_needs_restart(current, wanted);
    if replaced {
        Change::Replace
    } else {
        Change::InPlace
    }
}

fn config_needs_restart(current: &LxdContainerSpec, wanted: &LxdContainerSpec) -> bool {
    let changed = current
        .config
        .iter()
        .filter(|(key, value)| wanted.config.get(*key) != Some(*value))
        .map(|(key, _)| key)
        .chain(
            wanted
                .config
                .iter()
                .filter(|(key, value)| current.config.get(*key) != Some(*value))
                .map(|(key, _)| key),
        );
    changed
        .into_iter()
        .any(|key| RESTART_CONFIG_PREFIXES.iter().any(|p| key.starts_with(p)))
}

/// What the set asks for now.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted<'a> {
    /// `spec.replicas`.
    pub replicas: u32,
    /// The revision of the current template.
    pub revision: &'a str,
    /// The current template's spec.
    pub spec: &'a LxdContainerSpec,
    /// `spec.updateStrategy.type`.
    pub strategy: UpdateStrategyType,
    /// `maxUnavailable` as a count.
    pub max_unavailable: u32,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ordinals to create from the current template.
    pub create: Vec<u32>,
    /// Children to delete because the set shrank (or they are not the set's), highest
    /// ordinal first.
    pub scale_down: Vec<String>,
    /// Children to delete so that they are created again from the current template.
    pub replace: Vec<String>,
    /// Children to bring to the current template where they are.
    pub update_in_place: Vec<String>,
    /// Children that wait for their replacement turn (maxUnavailable reached).
    pub waiting: usize,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.scale_down.is_empty()
            && self.replace.is_empty()
            && self.update_in_place.is_empty()
    }
}

/// Decides the next actions of a set.
///
/// As a StatefulSet: missing ordinals below `replicas` are created at once (one burst, which
/// placement spreads as a whole); ordinals at or above it are deleted, highest first. A
/// rolling update changes in place what LXD takes live, at once, and replaces the rest from
/// the highest ordinal down, deleting only while fewer than `maxUnavailable` children are
/// unavailable (not Ready, being deleted, or missing); children already unavailable are
/// replaced first, as they cost nothing more.
pub fn decide(wanted: &Wanted<'_>, children: &[Child]) -> Plan {
    let mut plan = Plan::default();
    let mut kept: Vec<&Child> = Vec::new();
    let mut leaving: Vec<&Child> = children
        .iter()
        .filter(|c| !c.deleting && c.ordinal.is_none_or(|o| o >= wanted.replicas))
        .collect();
    leaving.sort_by(|a, b| b.ordinal.cmp(&a.ordinal).then_with(|| a.name.cmp(&b.name)));
    plan.scale_down = leaving.iter().map(|c| c.name.clone()).collect();
    for ordinal in 0..wanted.replicas {
        match children.iter().find(|c| c.ordinal == Some(ordinal)) {
            Some(child) => kept.push(child),
            None => plan.create.push(ordinal),
        }
    }
    if wanted.strategy == UpdateStrategyType::OnDelete {
        return plan;
    }
    let mut to_replace: Vec<&Child> = Vec::new();
    for child in kept.iter().filter(|c| !c.deleting) {
        if child.revision.as_deref() == Some(wanted.revision) {
            continue;
        }
        match change(&child.spec, wanted.spec) {
            Change::None | Change::InPlace => plan.update_in_place.push(child.name.clone()),
            Change::Replace => to_replace.push(child),
        }
    }
    let unavailable =
        wanted.replicas as usize - kept.iter().filter(|c| c.ready && !c.deleting).count();
    let mut budget = (wanted.max_unavailable as usize).saturating_sub(unavailable);
    // Unavailable ones first (free), then from the highest ordinal down.
    to_replace.sort_by(|a, b| a.ready.cmp(&b.ready).then(b.ordinal.cmp(&a.ordinal)));
    for child in to_replace {
        if !child.ready {
            plan.replace.push(child.name.clone());
        } else if budget > 0 {
            budget -= 1;
            plan.replace.push(child.name.clone());
        } else {
            plan.waiting += 1;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use lxd_operator_crds::testing::{container_spec, image};

    use super::*;

    const NEW: &str = "rev-new";

    fn child(ordinal: u32, revision: &str, spec: &LxdContainerSpec, ready: bool) -> Child {
        Child {
            name: format!("web-{ordinal}"),
            ordinal: Some(ordinal),
            revision: Some(revision.to_owned()),
            spec: spec.clone(),
            ready,
            deleting: false,
        }
    }

    fn wanted(replicas: u32, spec: &LxdContainerSpec) -> Wanted<'_> {
        Wanted {
            replicas,
            revision: NEW,
            spec,
            strategy: UpdateStrategyType::RollingUpdate,
            max_unavailable: 1,
        }
    }

    #[test]
    fn a_new_set_creates_every_ordinal_at_once() {
        let spec = container_spec();
        let plan = decide(&wanted(3, &spec), &[]);
        assert_eq!(plan.create, [0, 1, 2]);
        assert!(plan.replace.is_empty() && plan.scale_down.is_empty());
    }

    #[test]
    fn scaling_down_removes_the_highest_ordinals() {
        let spec = container_spec();
        let children: Vec<Child> = (0..5).map(|o| child(o, NEW, &spec, true)).collect();
        let plan = decide(&wanted(2, &spec), &children);
        assert_eq!(plan.scale_down, ["web-4", "web-3", "web-2"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_live_config_change_updates_every_child_in_place_at_once() {
        let old = container_spec();
        let mut new = old.clone();
        new.config.insert("user.tier".into(), "gold".into());
        let children: Vec<Child> = (0..6).map(|o| child(o, "rev-old", &old, true)).collect();
        let plan = decide(&wanted(6, &new), &children);
        assert_eq!(plan.update_in_place.len(), 6);
        assert!(plan.replace.is_empty());
    }

    #[test]
    fn an_image_change_replaces_one_child_at_a_time_from_the_highest_ordinal() {
        let old = container_spec();
        let mut new = old.clone();
        new.image = image("busybox-2");
        let mut children: Vec<Child> = (0..6).map(|o| child(o, "rev-old", &old, true)).collect();
        let plan = decide(&wanted(6, &new), &children);
        assert_eq!(plan.replace, ["web-5"]);
        assert_eq!(plan.waiting, 5);

        // web-5 is gone: it is created again, and nothing else is replaced meanwhile.
        children.pop();
        let plan = decide(&wanted(6, &new), &children);
        assert_eq!(plan.create, [5]);
        assert!(plan.replace.is_empty());

        // web-5 is back, not Ready yet: still nothing.
        children.push(child(5, NEW, &new, false));
        assert!(decide(&wanted(6, &new), &children).replace.is_empty());

        // Ready: the next one goes.
        children[5].ready = true;
        assert_eq!(decide(&wanted(6, &new), &children).replace, ["web-4"]);
    }

    #[test]
    fn an_outdated_child_that_is_not_ready_is_replaced_first_and_costs_nothing() {
        let old = container_spec();
        let mut new = old.clone();
        new.image = image("busybox-2");
        let mut children: Vec<Child> = (0..4).map(|o| child(o, "rev-old", &old, true)).collect();
        children[1].ready = false;
        let plan = decide(&wanted(4, &new), &children);
        assert_eq!(plan.replace, ["web-1"]);
    }

    #[test]
    fn max_unavailable_bounds_replacements_in_flight() {
        let old = container_spec();
        let mut new = old.clone();
        new.image = image("busybox-2");
        let children: Vec<Child> = (0..6).map(|o| child(o, "rev-old", &old, true)).collect();
        let mut wanted = wanted(6, &new);
        wanted.max_unavailable = 2;
        assert_eq!(decide(&wanted, &children).replace, ["web-5", "web-4"]);
    }

    #[test]
    fn on_delete_leaves_outdated_children_alone() {
        let old = container_spec();
        let mut new = old.clone();
        new.image = image("busybox-2");
        let children: Vec<Child> = (0..3).map(|o| child(o, "rev-old", &old, true)).collect();
        let mut wanted = wanted(3, &new);
        wanted.strategy = UpdateStrategyType::OnDelete;
        assert!(decide(&wanted, &children).is_empty());
    }

    #[test]
    fn restart_only_config_keys_replace_and_live_ones_do_not() {
        let old = container_spec();
        let with = |key: &str| {
            let mut spec = old.clone();
            spec.config.insert(key.into(), "true".into());
            spec
        };
        assert_eq!(change(&old, &with("user.note")), Change::InPlace);
        assert_eq!(change(&old, &with("security.nesting")), Change::Replace);
        assert_eq!(change(&old, &old), Change::None);
        let mut larger = old.clone();
        larger.resources = Some(lxd_operator_crds::container::ContainerResources {
            cpu: Some(2.0),
            memory: None,
        });
        assert_eq!(change(&old, &larger), Change::InPlace);
    }
}
