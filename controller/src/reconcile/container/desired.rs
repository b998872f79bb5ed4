//! What LXD should hold for an LxdContainer, and what placement is asked for it: its spec
//! checked against the rules the schema cannot express, parsed once, and mapped onto LXD's
//! instance fields and placement's request. Every later step uses these values, never the spec
//! again. Pure: no I/O.

use std::collections::BTreeMap;

use lxd_operator_crds::LxdContainer;
use lxd_operator_crds::container::{DesiredState, ImageSource};

use super::naming::{incarnation_name, instance_name};
use super::placement::PlacementRequest;
use super::placement::policy::PolicyChoice;
use crate::lxd::types::{InstanceCreate, InstanceSource, UID_KEY};
use crate::placement::model::{Request, Resources};
use crate::quantity::parse_bytes;

/// Config keys naming the custom resource that owns an instance.
pub const NAMESPACE_KEY: &str = "user.lxd-operator.namespace";
/// See [`NAMESPACE_KEY`].
pub const NAME_KEY: &str = "user.lxd-operator.name";

/// A spec the operator cannot carry out as written: names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct SpecError {
    /// Path of the offending field, e.g. `spec.config[limits.memory]`.
    pub field: String,
    /// The rule it breaks.
    pub rule: String,
}

fn spec_error(field: impl Into<String>, rule: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        rule: rule.into(),
    }
}

/// The instance an LxdContainer asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredInstance {
    /// LXD instance name (with the incarnation suffix after a reschedule).
    pub name: String,
    /// The name of the first incarnation, from the spec.
    pub base_name: String,
    /// Where its root file system comes from.
    pub source: InstanceSource,
    /// Profiles (LXD's `default` when the spec names none).
    pub profiles: Vec<String>,
    /// Whether the spec named profiles at all.
    pub profiles_given: bool,
    /// Config: the spec's keys, the resource limits, and the owner keys.
    pub config: BTreeMap<String, String>,
    /// Devices.
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    /// Ephemeral.
    pub ephemeral: bool,
    /// The state to keep it in.
    pub state: DesiredState,
    /// What placement is asked for it.
    pub placement: PlacementRequest,
}

impl DesiredInstance {
    /// Reads and checks a container's spec.
    pub fn from_container(container: &LxdContainer) -> Result<DesiredInstance, SpecError> {
        let namespace = container.metadata.namespace.as_deref().unwrap_or("default");
        let name = container
            .metadata
            .name
            .as_deref()
            .ok_or_else(|| spec_error("metadata.name", "is required"))?;
        let uid = container
            .metadata
            .uid
            .as_deref()
            .ok_or_else(|| spec_error("metadata.uid", "is required"))?;
        let spec = &container.spec;

        let source = match &spec.image {
            ImageSource {
                alias: Some(alias),
                fingerprint: None,
            } => InstanceSource::alias(alias),
            ImageSource {
                alias: None,
                fingerprint: Some(fingerprint),
            } => InstanceSource::fingerprint(fingerprint),
            _ => {
                return Err(spec_error(
                    "spec.image",
                    "set exactly one of alias and fingerprint",
                ));
            }
        };

        let mut config = BTreeMap::new();
        for (key, value) in &spec.config {
            let field = format!("spec.config[{key}]");
            if key.starts_with("volatile.") || key.starts_with("image.") {
                return Err(spec_error(
                    field,
                    "keys under volatile. and image. belong to LXD",
                ));
            }
            if key.starts_with("user.lxd-operator.") {
                return Err(spec_error(
                    field,
                    "keys under user.lxd-operator. belong to the operator",
                ));
            }
            if matches!(
                key.as_str(),
                "limits.cpu" | "limits.cpu.allowance" | "limits.memory"
            ) {
                return Err(spec_error(
                    field,
                    "set CPU and memory limits with spec.resources",
                ));
            }
            config.insert(key.clone(), value.clone());
        }

        let resources = spec.resources.clone().unwrap_or_default();
        if let Some(cpu) = resources.cpu {
            if !(cpu.is_finite() && cpu > 0.0) {
                return Err(spec_error(
                    "spec.resources.cpu",
                    "must be a number greater than 0",
                ));
            }
            config.extend(cpu_limits(cpu));
        }
        let memory_bytes = match &resources.memory {
            Some(memory) => {
                let bytes = parse_bytes(memory)
                    .map_err(|e| spec_error("spec.resources.memory", e.to_string()))?;
                config.insert("limits.memory".to_owned(), bytes.to_string());
                Some(bytes)
            }
            None => None,
        };
        let placement = spec.placement.clone().unwrap_or_default();
        let policy = match (&placement.policy, placement.strategy) {
            (Some(_), Some(_)) => {
                return Err(spec_error(
                    "spec.placement",
                    "set at most one of policy and strategy",
                ));
            }
            (Some(name), None) => PolicyChoice::Named(name.clone()),
            (None, Some(strategy)) => PolicyChoice::Strategy(strategy),
            (None, None) => PolicyChoice::ClusterDefault,
        };
        let request = Request {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: container.metadata.labels.clone().unwrap_or_default(),
            resources: Resources {
                cpu: resources.cpu.unwrap_or(0.0),
                memory: memory_bytes.map_or(0.0, |bytes| bytes as f64),
            },
            architecture: None,
            placement,
        };

        config.insert(UID_KEY.to_owned(), uid.to_owned());
        config.insert(NAMESPACE_KEY.to_owned(), namespace.to_owned());
        config.insert(NAME_KEY.to_owned(), name.to_owned());

        let base_name = spec
            .instance_name
            .clone()
            .unwrap_or_else(|| instance_name(namespace, name));
        let incarnation = container
            .status
            .as_ref()
            .and_then(|s| s.incarnation)
            .unwrap_or(0);
        Ok(DesiredInstance {
            name: incarnation_name(&base_name, incarnation),
            base_name,
            source,
            profiles: spec
                .profiles
                .clone()
                .unwrap_or_else(|| vec!["default".to_owned()]),
            profiles_given: spec.profiles.is_some(),
            config,
            devices: spec.devices.clone(),
            ephemeral: spec.ephemeral,
            state: spec.state,
            placement: PlacementRequest {
                uid: uid.to_owned(),
                cluster: spec.cluster_ref.name.clone(),
                request,
                policy,
            },
        })
    }

    /// Becomes the container's `incarnation`-th instance (after a reschedule).
    pub fn reincarnate(&mut self, incarnation: u32) {
        self.name = incarnation_name(&self.base_name, incarnation);
    }

    /// The owning LxdContainer's uid (also under [`UID_KEY`] in `config`).
    pub fn uid(&self) -> &str {
        &self.placement.uid
    }

    /// The create request for it.
    pub fn create_request(&self) -> InstanceCreate {
        InstanceCreate {
            name: self.name.clone(),
            instance_type: "container".to_owned(),
            source: self.source.clone(),
            profiles: self.profiles_given.then(|| self.profiles.clone()),
            config: self.config.clone(),
            devices: self.devices.clone(),
            ephemeral: self.ephemeral,
            description: String::new(),
        }
    }
}

/// Whole cores limit the CPUs (`limits.cpu`); a fraction also caps CPU time per 100 ms
/// (`limits.cpu.allowance`), so 0.5 means half of one core and 1.5 one and a half of two.
fn cpu_limits(cpu: f64) -> Vec<(String, String)> {
    let cores = cpu.ceil().max(1.0) as u64;
    let mut limits = vec![("limits.cpu".to_owned(), cores.to_string())];
    if cpu.fract() != 0.0 {
        let millis = (cpu * 100.0).round().max(1.0) as u64;
        limits.push((
            "limits.cpu.allowance".to_owned(),
            format!("{millis}ms/100ms"),
        ));
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `web-1` in `default`, as the API server hands it over.
    fn web() -> lxd_operator_crds::testing::LxdContainerBuilder {
        LxdContainer::builder("web-1")
            .namespace("default")
            .uid("1234-uid")
    }

    #[test]
    fn resources_become_lxd_limits_and_the_owner_is_recorded() {
        let desired = DesiredInstance::from_container(
            &web()
                .cpu(1.5)
                .memory("256Mi")
                .config("user.role", "web")
                .build(),
        )
        .unwrap();
        assert_eq!(desired.name, "default-web-1");
        let keys: Vec<(&str, &str)> = desired
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("limits.cpu", "2"),
                ("limits.cpu.allowance", "150ms/100ms"),
                ("limits.memory", "268435456"),
                ("user.lxd-operator.name", "web-1"),
                ("user.lxd-operator.namespace", "default"),
                ("user.lxd-operator.uid", "1234-uid"),
                ("user.role", "web"),
            ]
        );
        assert_eq!(
            desired.placement.request.resources.memory, 268_435_456.0,
            "placement is asked for the memory the limit gives"
        );
        assert_eq!(
            desired.create_request().profiles,
            None,
            "no profiles field: LXD applies default"
        );
    }

    #[test]
    fn a_whole_cpu_sets_no_allowance() {
        let desired = DesiredInstance::from_container(&web().cpu(2.0).build()).unwrap();
        assert_eq!(
            desired.config.get("limits.cpu").map(String::as_str),
            Some("2")
        );
        assert!(!desired.config.contains_key("limits.cpu.allowance"));
    }

    #[test]
    fn reserved_keys_and_bad_sizes_name_the_field_and_the_rule() {
        let cases = [
            (
                web().config("volatile.uuid", "x"),
                "spec.config[volatile.uuid]",
                "belong to LXD",
            ),
            (
                web().config("user.lxd-operator.uid", "x"),
                "spec.config[user.lxd-operator.uid]",
                "belong to the operator",
            ),
            (
                web().config("limits.memory", "1G"),
                "spec.config[limits.memory]",
                "spec.resources",
            ),
            (
                web().memory("lots"),
                "spec.resources.memory",
                "not a quantity",
            ),
            (web().cpu(-1.0), "spec.resources.cpu", "greater than 0"),
            (
                web().image_source(ImageSource {
                    alias: Some("a".into()),
                    fingerprint: Some("abcdef012345".into()),
                }),
                "spec.image",
                "exactly one",
            ),
            (
                web()
                    .policy("balanced")
                    .strategy(lxd_operator_crds::container::PlacementStrategy::Spread),
                "spec.placement",
                "at most one of policy and strategy",
            ),
        ];
        for (container, field, rule) in cases {
            let error = DesiredInstance::from_container(&container.build()).unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.rule.contains(rule), "{error}");
        }
    }

    #[test]
    fn an_explicit_instance_name_and_profiles_are_kept() {
        let desired = DesiredInstance::from_container(
            &web().instance_name("legacy-web").profiles(&[]).build(),
        )
        .unwrap();
        assert_eq!(desired.name, "legacy-web");
        assert_eq!(desired.create_request().profiles, Some(vec![]));
    }
}
