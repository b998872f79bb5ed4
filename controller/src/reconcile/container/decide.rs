//! The next step for an LxdContainer, from what it asks for and what LXD holds. Pure: the
//! reconciler reads LXD, calls [`next_step`], carries the step out, and asks again.

use lxd_operator_crds::container::DesiredState;

use crate::lxd::types::{Instance, InstancePut, StateAction};

use super::desired::DesiredInstance;

/// One step towards the desired instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing exists and no member is chosen: place the container.
    Place,
    /// Nothing exists: create it on the chosen member.
    Create { member: String },
    /// Its config, devices, profiles or ephemeral flag differ: replace them.
    Update(InstancePut),
    /// Its state differs: change it.
    ChangeState(StateAction),
    /// An instance of that name belongs to someone else (another uid, or none): never touched.
    NameTaken { owner: Option<String> },
    /// It is as desired.
    InSync,
}

impl Step {
    /// A short name for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Step::Place => "place",
            Step::Create { .. } => "create",
            Step::Update(_) => "update",
            Step::ChangeState(StateAction::Start) => "start",
            Step::ChangeState(StateAction::Stop) => "stop",
            Step::ChangeState(StateAction::Restart) => "restart",
            Step::ChangeState(StateAction::Freeze) => "freeze",
            Step::ChangeState(StateAction::Unfreeze) => "unfreeze",
            Step::NameTaken { .. } => "name-taken",
            Step::InSync => "in-sync",
        }
    }
}

/// Config keys LXD writes itself; they are kept as they are and never compared.
fn is_lxd_owned(key: &str) -> bool {
    key.starts_with("volatile.") || key.starts_with("image.")
}

/// Decides the next step. `observed` is the instance found (by owner uid, else by name);
/// `member` is the member chosen for the container, if one is and it may still be used.
pub fn next_step(
    desired: &DesiredInstance,
    observed: Option<&Instance>,
    member: Option<&str>,
) -> Step {
    let Some(instance) = observed else {
        return match member {
            Some(member) => Step::Create {
                member: member.to_owned(),
            },
            None => Step::Place,
        };
    };
    if instance.owner_uid() != Some(desired.uid()) {
        return Step::NameTaken {
            owner: instance.owner_uid().map(str::to_owned),
        };
    }
    if let Some(put) = needed_update(desired, instance) {
        return Step::Update(put);
    }
    match state_action(desired.state, &instance.status) {
        Some(action) => Step::ChangeState(action),
        None => Step::InSync,
    }
}

/// The replacement of the instance's writable part, if anything in it differs.
fn needed_update(desired: &DesiredInstance, instance: &Instance) -> Option<InstancePut> {
    let current_config = instance.config.iter().filter(|(key, _)| !is_lxd_owned(key));
    let same_config = current_config.eq(desired.config.iter());
    let same = same_config
        && instance.devices == desired.devices
        && instance.profiles == desired.profiles
        && instance.ephemeral == desired.ephemeral;
    if same {
        return None;
    }
    let mut put = instance.to_put();
    put.config = instance
        .config
        .iter()
        .filter(|(key, _)| is_lxd_owned(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    put.config.extend(desired.config.clone());
    put.devices = desired.devices.clone();
    put.profiles = desired.profiles.clone();
    put.ephemeral = desired.ephemeral;
    Some(put)
}

/// The state change that moves an instance in `status` towards `desired`; Frozen is reached
/// from Stopped in two steps (start, then freeze).
fn state_action(desired: DesiredState, status: &str) -> Option<StateAction> {
    match (desired, status) {
        (DesiredState::Running, "Stopped") => Some(StateAction::Start),
        (DesiredState::Running, "Frozen") => Some(StateAction::Unfreeze),
        (DesiredState::Stopped, "Running" | "Frozen") => Some(StateAction::Stop),
        (DesiredState::Frozen, "Stopped") => Some(StateAction::Start),
        (DesiredState::Frozen, "Running") => Some(StateAction::Freeze),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lxd::types::{InstanceSource, UID_KEY};
    use crate::placement::model::Request;
    use crate::reconcile::container::placement::PlacementRequest;
    use crate::reconcile::container::placement::policy::PolicyChoice;

    fn desired(state: DesiredState) -> DesiredInstance {
        DesiredInstance {
            name: "default-web-1".into(),
            base_name: "default-web-1".into(),
            source: InstanceSource::alias("busybox"),
            profiles: vec!["default".into()],
            profiles_given: false,
            config: BTreeMap::from([
                (UID_KEY.to_owned(), "uid-1".to_owned()),
                ("user.role".to_owned(), "web".to_owned()),
            ]),
            devices: BTreeMap::new(),
            ephemeral: false,
            state,
            placement: PlacementRequest {
                uid: "uid-1".into(),
                cluster: "local".into(),
                request: Request::default(),
                policy: PolicyChoice::ClusterDefault,
            },
        }
    }

    fn observed(status: &str, extra: &[(&str, &str)]) -> Instance {
        let mut config = desired(DesiredState::Running).config;
        config.insert("volatile.uuid".into(), "abc".into());
        config.insert("image.os".into(), "busybox".into());
        config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Instance {
            name: "default-web-1".into(),
            status: status.into(),
            profiles: vec!["default".into()],
            config,
            ..Instance::default()
        }
    }

    #[test]
    fn nothing_there_is_placed_then_created_on_the_chosen_member() {
        assert_eq!(
            next_step(&desired(DesiredState::Running), None, None),
            Step::Place
        );
        assert_eq!(
            next_step(&desired(DesiredState::Running), None, Some("node2")),
            Step::Create {
                member: "node2".into()
            }
        );
    }

    #[test]
    fn each_desired_state_is_reached_from_each_observed_state() {
        let cases = [
            (DesiredState::Running, "Running", None),
            (DesiredState::Running, "Stopped", Some(StateAction::Start)),
            (DesiredState::Running, "Frozen", Some(StateAction::Unfreeze)),
            (DesiredState::Stopped, "Running", Some(StateAction::Stop)),
            (DesiredState::Stopped, "Frozen", Some(StateAction::Stop)),
            (DesiredState::Stopped, "Stopped", None),
            (DesiredState::Frozen, "Stopped", Some(StateAction::Start)),
            (DesiredState::Frozen, "Running", Some(StateAction::Freeze)),
            (DesiredState::Frozen, "Frozen", None),
        ];
        for (want, status, action) in cases {
            let step = next_step(&desired(want), Some(&observed(status, &[])), Some("node1"));
            let expected = action.map_or(Step::InSync, Step::ChangeState);
            assert_eq!(step, expected, "{want:?} from {status}");
        }
    }

    #[test]
    fn config_drift_is_replaced_keeping_lxds_own_keys() {
        let instance = observed("Running", &[("user.added-by-hand", "1")]);
        let Step::Update(put) = next_step(
            &desired(DesiredState::Running),
            Some(&instance),
            Some("node1"),
        ) else {
            panic!("expected an update");
        };
        assert!(!put.config.contains_key("user.added-by-hand"));
        assert_eq!(
            put.config.get("volatile.uuid").map(String::as_str),
            Some("abc")
        );
        assert_eq!(
            put.config.get("image.os").map(String::as_str),
            Some("busybox")
        );
        assert_eq!(put.config.get("user.role").map(String::as_str), Some("web"));
    }

    #[test]
    fn someone_elses_instance_is_never_touched() {
        let mut instance = observed("Stopped", &[]);
        instance.config.insert(UID_KEY.into(), "other-uid".into());
        assert_eq!(
            next_step(&desired(DesiredState::Running), Some(&instance), None),
            Step::NameTaken {
                owner: Some("other-uid".into())
            }
        );
        instance.config.remove(UID_KEY);
        assert_eq!(
            next_step(&desired(DesiredState::Running), Some(&instance), None),
            Step::NameTaken { owner: None }
        );
    }
}
