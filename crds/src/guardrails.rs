//! Guardrails: what a container may ask of LXD on a cluster. LXD hands out the host to whoever
//! may set `security.privileged`, `raw.lxc`, a `disk` device with `source: /` or a
//! `unix-block` device; a namespace is a tenant boundary only when such requests are refused.
//!
//! The rules are here, beside the types, because several places enforce them and must agree:
//! admission (`crate::admission`: the embedded API server, and the operator's webhook on
//! Kubernetes; a refused object is never stored) and the controller before anything reaches LXD
//! (an object admitted before its cluster's policy tightened is not acted on against it).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::LxdClusterSpec;
use crate::container::LxdContainerSpec;
use crate::shared::{LabelSelector, selector_matches, selector_query};

/// What containers on a cluster may ask of LXD beyond the safe defaults. Without it (or with
/// every field empty) the defaults hold: config keys that hand out the host (`security.*`
/// except `security.idmap.isolated` and `security.protection.*`, `raw.*`, `linux.*`,
/// `nvidia.*`) are refused; devices may be `disk` (a storage volume, or a host path under
/// `allowedHostPaths`), `nic` joined to a managed network or bridge (`network`, or `nictype`
/// `bridged` or `p2p`), `proxy` bound in the container (`bind: instance`) and `none`; any
/// profile may be used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Guardrails {
    /// Config keys allowed although the defaults refuse them: an exact key
    /// (`security.nesting`) or a prefix ending in `*` (`security.syscalls.intercept.*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 255)))]
    pub allow_config_keys: Vec<String>,
    /// Config keys refused besides the defaults, written as in `allowConfigKeys`. A key both
    /// allowed and denied is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 255)))]
    pub deny_config_keys: Vec<String>,
    /// Device types allowed besides the defaults, e.g. `unix-char` or `gpu`. A device of such
    /// a type is allowed whatever its keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    pub allow_device_types: Vec<String>,
    /// Host paths (absolute) under which `disk` devices may mount host directories, e.g.
    /// `/srv/shared`. Without any, a `disk` device may only attach storage volumes (`pool`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 4096), regex(pattern = "^/"))
    )]
    pub allowed_host_paths: Vec<String>,
    /// The profiles containers may use. Without any, every profile may be used (profiles are
    /// written by the LXD administrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub allowed_profiles: Option<Vec<String>>,
}

/// Config key prefixes refused by default: each hands out the host or its kernel.
const DENIED_CONFIG: &[(&str, &str)] = &[
    (
        "security.",
        "security.* changes the container's isolation from the host",
    ),
    (
        "raw.",
        "raw.* passes configuration to LXC, QEMU or the idmap unchecked",
    ),
    (
        "linux.",
        "linux.* loads kernel modules or sets host kernel parameters",
    ),
    (
        "nvidia.",
        "nvidia.* hands host GPUs and driver files to the container",
    ),
];

/// Keys under a denied prefix that only narrow what the container may do.
const SAFE_CONFIG: &[&str] = &["security.idmap.isolated", "security.protection."];

/// Device types allowed by default (with the rules of [`check_device`]).
const SAFE_DEVICE_TYPES: &[&str] = &["disk", "nic", "proxy", "none"];

/// `nictype`s that stay off the host's own network.
const SAFE_NIC_TYPES: &[&str] = &["bridged", "p2p"];

/// One thing a spec asks that the guardrails refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, e.g. `spec.config["security.privileged"]`.
    pub field: String,
    /// The value asked for.
    pub value: String,
    /// Why it is refused.
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}: {}", self.field, self.value, self.rule)
    }
}

/// Everything the cluster `cluster` (its spec, when it exists) refuses of a container in
/// `namespace` (with `namespace_labels`) whose spec is `container`, each named under `path`
/// (`spec` for a container, `spec.template.spec` for a set): the namespace, when the cluster's
/// `namespaceSelector` does not select it, and what its guardrails (or the safe defaults) deny.
/// The one check the API server's admission and the controller both make.
pub fn refusals(
    cluster: &str,
    spec: Option<&LxdClusterSpec>,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    path: &str,
    container: &LxdContainerSpec,
) -> Vec<Violation> {
    let selector = spec.and_then(|s| s.namespace_selector.as_ref());
    let mut violations: Vec<Violation> =
        namespace_refusal(cluster, selector, namespace, namespace_labels, path)
            .into_iter()
            .collect();
    let guardrails = spec.and_then(|s| s.guardrails.clone()).unwrap_or_default();
    violations.extend(guardrails.check(cluster, path, container));
    violations
}

/// Why a namespace may not use a cluster, if it may not: the cluster's `namespaceSelector`
/// does not select the namespace's labels.
fn namespace_refusal(
    cluster: &str,
    selector: Option<&LabelSelector>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    path: &str,
) -> Option<Violation> {
    let selector = selector?;
    if selector_matches(selector, labels) {
        return None;
    }
    Some(Violation {
        field: format!("{path}.clusterRef.name"),
        value: cluster.to_owned(),
        rule: format!(
            "namespace {namespace} is not admitted to cluster {cluster} (its namespaceSelector {} does not select the namespace's labels)",
            selector_query(selector)
        ),
    })
}

/// Whether `key` is matched by `pattern` (exact, or a prefix ending in `*`).
fn key_matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

impl Guardrails {
    /// What `spec` asks that these guardrails (of the cluster `cluster`) refuse, each named by
    /// its field under `path` (`spec` for a container, `spec.template.spec` for a set).
    pub fn check(&self, cluster: &str, path: &str, spec: &LxdContainerSpec) -> Vec<Violation> {
        let by = |why: &str| format!("denied by cluster {cluster}'s policy ({why})");
        let mut violations = Vec::new();
        for (key, value) in &spec.config {
            if let Some(why) = self.config_refusal(key) {
                violations.push(Violation {
                    field: format!("{path}.config[{key:?}]"),
                    value: value.clone(),
                    rule: by(&why),
                });
            }
        }
        for (name, device) in &spec.devices {
            if let Some((key, value, why)) = self.device_refusal(device) {
                violations.push(Violation {
                    field: format!("{path}.devices[{name:?}].{key}"),
                    value,
                    rule: by(&why),
                });
            }
        }
        if let Some(allowed) = &self.allowed_profiles {
            for (index, profile) in spec.profiles.iter().flatten().enumerate() {
                if !allowed.contains(profile) {
                    violations.push(Violation {
                        field: format!("{path}.profiles[{index}]"),
                        value: profile.clone(),
                        rule: by(&format!("allowed profiles: {}", allowed.join(", "))),
                    });
                }
            }
        }
        violations
    }

    fn config_refusal(&self, key: &str) -> Option<String> {
        if let Some(pattern) = self.deny_config_keys.iter().find(|p| key_matches(p, key)) {
            return Some(format!("denyConfigKeys has {pattern}"));
        }
        if self.allow_config_keys.iter().any(|p| key_matches(p, key))
            || SAFE_CONFIG.iter().any(|safe| match safe.strip_suffix('.') {
                Some(_) => key.starts_with(safe),
                None => key == *safe,
            })
        {
            return None;
        }
        DENIED_CONFIG
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix))
            .map(|(_, why)| format!("{why}; allow it with spec.guardrails.allowConfigKeys"))
    }

    /// The key, value and reason a device is refused for, if it is.
    fn device_refusal(
        &self,
        device: &BTreeMap<String, String>,
    ) -> Option<(String, String, String)> {
        let kind = device.get("type").map(String::as_str).unwrap_or_default();
        if self.allow_device_types.iter().any(|t| t == kind) {
            return None;
        }
        let refused =
            |key: &str, value: &str, why: String| Some((key.to_owned(), value.to_owned(), why));
        if !SAFE_DEVICE_TYPES.contains(&kind) {
            return refused(
                "type",
                kind,
                format!(
                    "device type {kind} reaches host devices; allow it with spec.guardrails.allowDeviceTypes"
                ),
            );
        }
        match kind {
            "disk" => {
                let source = device.get("source").map(String::as_str).unwrap_or_default();
                let from_pool = device.contains_key("pool");
                if source.is_empty() || (from_pool && !source.starts_with('/')) {
                    return None;
                }
                if self.host_path_allowed(source) {
                    return None;
                }
                refused(
                    "source",
                    source,
                    if self.allowed_host_paths.is_empty() {
                        "no host path may be mounted; allow one with spec.guardrails.allowedHostPaths".to_owned()
                    } else {
                        format!(
                            "host paths allowed: under {}",
                            self.allowed_host_paths.join(", ")
                        )
                    },
                )
            }
            "nic" => {
                if device.contains_key("network") {
                    return None;
                }
                let nictype = device
                    .get("nictype")
                    .map(String::as_str)
                    .unwrap_or_default();
                if SAFE_NIC_TYPES.contains(&nictype) {
                    return None;
                }
                refused(
                    "nictype",
                    nictype,
                    format!(
                        "a nic of nictype {nictype:?} reaches the host's own network; use a managed network or a bridge, or allow type nic with spec.guardrails.allowDeviceTypes"
                    ),
                )
            }
            "proxy" => {
                let bind = device.get("bind").map(String::as_str).unwrap_or("host");
                if bind == "instance" {
                    return None;
                }
                refused(
                    "bind",
                    bind,
                    "a proxy bound on the host listens on the host's addresses; bind it in the instance, or allow type proxy with spec.guardrails.allowDeviceTypes".to_owned(),
                )
            }
            _ => None,
        }
    }

    /// Whether `source` lies under an allowed host path, by whole path components and with
    /// no `..` to climb out.
    fn host_path_allowed(&self, source: &str) -> bool {
        if !source.starts_with('/') || source.split('/').any(|part| part == "..") {
            return false;
        }
        self.allowed_host_paths.iter().any(|allowed| {
            let allowed = allowed.trim_end_matches('/');
            !allowed.is_empty()
                && (source == allowed
                    || source
                        .strip_prefix(allowed)
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::container_spec;

    fn with_config(key: &str, value: &str) -> LxdContainerSpec {
        let mut spec = container_spec();
        spec.config.insert(key.into(), value.into());
        spec
    }

    fn with_device(keys: &[(&str, &str)]) -> LxdContainerSpec {
        let mut spec = container_spec();
        spec.devices.insert(
            "dev".into(),
            keys.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        spec
    }

    fn refused(guardrails: &Guardrails, spec: &LxdContainerSpec) -> Vec<String> {
        guardrails
            .check("local", "spec", spec)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Config keys, devices and paths that escape the host: each refused by default.
    #[test]
    fn the_defaults_refuse_every_way_out_to_the_host() {
        let defaults = Guardrails::default();
        let escapes = [
            with_config("security.privileged", "true"),
            with_config("security.nesting", "true"),
            with_config("security.idmap.base", "0"),
            with_config("security.idmap.size", "4294967295"),
            with_config("security.syscalls.intercept.mknod", "true"),
            with_config("security.syscalls.intercept.mount", "true"),
            with_config("security.syscalls.intercept.bpf", "true"),
            with_config("security.devlxd.images", "true"),
            with_config("raw.lxc", "lxc.apparmor.profile=unconfined"),
            with_config("raw.idmap", "both 0 0"),
            with_config("raw.apparmor", "mount,"),
            with_config("raw.seccomp", "2"),
            with_config("linux.kernel_modules", "ip_tables"),
            with_config("linux.sysctl.net.ipv4.ip_forward", "1"),
            with_config("nvidia.runtime", "true"),
            with_device(&[("type", "disk"), ("source", "/"), ("path", "/host")]),
            with_device(&[("type", "disk"), ("source", "/etc"), ("path", "/etc2")]),
            with_device(&[("type", "disk"), ("source", "/var/lib/lxd"), ("path", "/x")]),
            with_device(&[("type", "disk"), ("source", "/dev/sda"), ("path", "/x")]),
            with_device(&[("type", "disk"), ("pool", "default"), ("source", "/root")]),
            with_device(&[("type", "unix-char"), ("source", "/dev/kmsg")]),
            with_device(&[("type", "unix-block"), ("source", "/dev/sda")]),
            with_device(&[("type", "unix-hotplug")]),
            with_device(&[("type", "gpu")]),
            with_device(&[("type", "usb")]),
            with_device(&[("type", "pci"), ("address", "0000:00:02.0")]),
            with_device(&[("type", "infiniband")]),
            with_device(&[("type", "tpm")]),
            with_device(&[("type", "nic"), ("nictype", "physical"), ("parent", "eth0")]),
            with_device(&[("type", "nic"), ("nictype", "macvlan"), ("parent", "eth0")]),
            with_device(&[("type", "nic"), ("nictype", "ipvlan"), ("parent", "eth0")]),
            with_device(&[("type", "nic"), ("nictype", "routed")]),
            with_device(&[("type", "nic"), ("nictype", "sriov"), ("parent", "eth0")]),
            with_device(&[
                ("type", "proxy"),
                ("listen", "tcp:0.0.0.0:80"),
                ("connect", "tcp:127.0.0.1:80"),
            ]),
        ];
        for spec in &escapes {
            let refusals = refused(&defaults, spec);
            assert_eq!(refusals.len(), 1, "{spec:?}: {refusals:?}");
            assert!(
                refusals[0].contains("denied by cluster local's policy"),
                "{}",
                refusals[0]
            );
        }
    }

    #[test]
    fn the_defaults_let_ordinary_containers_through() {
        let defaults = Guardrails::default();
        let ordinary = [
            container_spec(),
            with_config("user.role", "web"),
            with_config("security.idmap.isolated", "true"),
            with_config("security.protection.delete", "true"),
            with_config("boot.autostart", "true"),
            with_config("environment.HTTP_PROXY", "http://127.0.0.1:3128"),
            with_device(&[
                ("type", "disk"),
                ("pool", "default"),
                ("source", "data"),
                ("path", "/data"),
            ]),
            with_device(&[("type", "disk"), ("pool", "default"), ("path", "/")]),
            with_device(&[("type", "nic"), ("network", "lxdbr0")]),
            with_device(&[
                ("type", "nic"),
                ("nictype", "bridged"),
                ("parent", "lxdbr0"),
            ]),
            with_device(&[
                ("type", "proxy"),
                ("bind", "instance"),
                ("listen", "tcp:127.0.0.1:80"),
                ("connect", "tcp:10.0.0.1:80"),
            ]),
            with_device(&[("type", "none")]),
        ];
        for spec in &ordinary {
            assert_eq!(refused(&defaults, spec), Vec::<String>::new(), "{spec:?}");
        }
    }

    #[test]
    fn an_administrator_opens_each_door_deliberately() {
        let opened = Guardrails {
            allow_config_keys: vec!["security.nesting".into(), "raw.*".into()],
            allow_device_types: vec!["unix-char".into()],
            allowed_host_paths: vec!["/srv/shared".into()],
            ..Guardrails::default()
        };
        assert!(refused(&opened, &with_config("security.nesting", "true")).is_empty());
        assert!(refused(&opened, &with_config("raw.lxc", "x")).is_empty());
        assert_eq!(
            refused(&opened, &with_config("security.privileged", "true")).len(),
            1
        );
        assert!(
            refused(
                &opened,
                &with_device(&[("type", "unix-char"), ("source", "/dev/fuse")])
            )
            .is_empty()
        );
        let mount =
            |source: &str| with_device(&[("type", "disk"), ("source", source), ("path", "/x")]);
        assert!(refused(&opened, &mount("/srv/shared")).is_empty());
        assert!(refused(&opened, &mount("/srv/shared/team-a")).is_empty());
        assert_eq!(refused(&opened, &mount("/srv/shared-other")).len(), 1);
        assert_eq!(refused(&opened, &mount("/srv/shared/../../etc")).len(), 1);

        let denied = Guardrails {
            allow_config_keys: vec!["user.*".into()],
            deny_config_keys: vec!["user.secret*".into()],
            allowed_profiles: Some(vec!["default".into()]),
            ..Guardrails::default()
        };
        assert_eq!(refused(&denied, &with_config("user.secret", "x")).len(), 1);
        let mut profiled = container_spec();
        profiled.profiles = Some(vec!["default".into(), "privileged".into()]);
        assert_eq!(
            refused(&denied, &profiled),
            [
                "spec.profiles[1]: \"privileged\": denied by cluster local's policy (allowed profiles: default)"
            ]
        );
    }

    #[test]
    fn a_namespace_the_cluster_does_not_select_is_refused_naming_the_rule() {
        let selector = LabelSelector {
            match_labels: Some([("tenant".to_owned(), "yes".to_owned())].into()),
            match_expressions: None,
        };
        let admitted: BTreeMap<String, String> = [("tenant".to_owned(), "yes".to_owned())].into();
        assert_eq!(
            namespace_refusal("local", Some(&selector), "team-a", &admitted, "spec"),
            None
        );
        assert_eq!(
            namespace_refusal("local", None, "team-b", &BTreeMap::new(), "spec"),
            None
        );
        let refusal =
            namespace_refusal("local", Some(&selector), "team-b", &BTreeMap::new(), "spec")
                .unwrap();
        assert_eq!(
            refusal.to_string(),
            "spec.clusterRef.name: \"local\": namespace team-b is not admitted to cluster local (its namespaceSelector tenant=yes does not select the namespace's labels)"
        );
    }

    #[test]
    fn a_refusal_names_the_field_the_value_and_the_rule() {
        let refusal = &refused(
            &Guardrails::default(),
            &with_config("security.privileged", "true"),
        )[0];
        assert!(
            refusal.starts_with(
                "spec.config[\"security.privileged\"]: \"true\": denied by cluster local's policy (security.*"
            ),
            "{refusal}"
        );
    }
}
