//! The kinds the server serves: built-in ones, and every CustomResourceDefinition stored, which
//! becomes servable as soon as it is created; and, as each kind's [`Role`], what the few kinds
//! that are more than stored (Namespaces, CRDs, `events.k8s.io` Events) do on a write.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, JSONSchemaProps,
};

use crate::schema::validation::{InvalidPattern, NameRule, SchemaValidator};

/// A CustomResourceDefinition whose kind cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The schema of a served version has a `pattern` that is not a valid regular expression.
    #[error(transparent)]
    Pattern(#[from] InvalidPattern),
}

/// What the server does for a kind beyond storing it. The registry is the one place that knows
/// which kinds these are; writes ask the resource, never its kind's name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Stored and served, nothing more.
    #[default]
    Plain,
    /// A Namespace: named by a DNS label, and deleting one deletes what it holds.
    Namespace,
    /// A CustomResourceDefinition: named `<plural>.<group>`, and writing one serves its kind.
    Definition,
    /// An `events.k8s.io` Event: stored as a core Event and shown in its own form.
    EventsApiEvent,
    /// An LxdContainer, or an LxdContainerSet, whose container spec (at this JSON pointer) is
    /// admitted by its LxdCluster's guardrails.
    ContainerSpecAt(&'static str),
    /// A Node: created with its status, as kubelet registers one with its capacity (other
    /// kinds with a status subresource drop the status a create carries).
    Node,
}

/// The paths a CRD's `subresources.scale` names, in its notation (`.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// Where the object holds the replicas asked for; `/scale` writes only this field.
    pub spec_replicas: String,
    /// Where the object's status holds the replicas there are.
    pub status_replicas: String,
    /// Where the object's status holds its selector as a label query string, if anywhere.
    pub label_selector: Option<String>,
}

/// One resource type.
#[derive(Debug, Clone)]
pub struct Resource {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural, lower case (the URL segment).
    pub plural: String,
    /// Singular, lower case.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`lxdc`).
    pub short_names: Vec<String>,
    /// Categories (`lxd`).
    pub categories: Vec<String>,
    /// Whether writes to the main resource ignore `status` and `/status` exists.
    pub status_subresource: bool,
    /// Where `/scale` reads and writes the replicas, when the kind has that subresource.
    pub scale: Option<ScalePaths>,
    /// Whether this is a custom resource (strategic merge patch refused, schema validated).
    pub custom: bool,
    /// Printer columns of a custom resource.
    pub columns: Vec<CustomResourceColumnDefinition>,
    /// The schema, for validation and OpenAPI.
    pub schema: Option<Arc<JSONSchemaProps>>,
    /// The compiled schema.
    pub validator: Option<Arc<SchemaValidator>>,
    /// Where its objects are stored; two API versions of one thing (Events) share it.
    pub storage: String,
    /// What writes of it do beyond storing it.
    pub role: Role,
}

impl Resource {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix of objects in `namespace` (all namespaces when `None`).
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(namespace)) => format!("/{}/{namespace}/", self.storage),
            _ => format!("/{}/", self.storage),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        if self.namespaced {
            format!(
                "/{}/{}/{name}",
                self.storage,
                namespace.unwrap_or("default")
            )
        } else {
            format!("/{}/-/{name}", self.storage)
        }
    }

    /// The apiVersion its objects are stored with: an `events.k8s.io` Event is stored as a
    /// core one.
    pub fn stored_api_version(&self) -> String {
        if self.role == Role::EventsApiEvent {
            "v1".to_owned()
        } else {
            self.api_version()
        }
    }

    /// The rule its objects' names follow.
    pub fn name_rule(&self) -> NameRule {
        if self.role == Role::Namespace {
            NameRule::DnsLabel
        } else {
            NameRule::DnsSubdomain
        }
    }

    /// Whether a create keeps the status it carries.
    pub fn keeps_status_on_create(&self) -> bool {
        !self.status_subresource || self.role == Role::Node
    }

    /// Whether a DELETE of the collection deletes every object in it. Not for namespaces, as
    /// in Kubernetes: one request must not delete every tenant with all it holds.
    pub fn deletes_collections(&self) -> bool {
        self.role != Role::Namespace
    }

    /// The verbs discovery lists.
    pub fn verbs(&self) -> Vec<&'static str> {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if !self.deletes_collections() {
            verbs.retain(|verb| *verb != "deletecollection");
        }
        verbs
    }
}

fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    storage: &str,
) -> Resource {
    Resource {
        group: group.to_owned(),
        version: version.to_owned(),
        plural: plural.to_owned(),
        singular: kind.to_lowercase(),
        kind: kind.to_owned(),
        namespaced,
        short_names: short_names.iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        status_subresource: false,
        scale: None,
        custom: false,
        columns: Vec::new(),
        schema: None,
        validator: None,
        storage: storage.to_owned(),
        role: Role::Plain,
    }
}

/// What `kubectl get pods` shows of a Pod here: its phase and Node (kubelet's readiness and
/// restarts are not kept by a stored Pod).
fn pod_columns() -> Vec<CustomResourceColumnDefinition> {
    let column = |name: &str, type_: &str, json_path: &str| CustomResourceColumnDefinition {
        name: name.to_owned(),
        type_: type_.to_owned(),
        json_path: json_path.to_owned(),
        ..Default::default()
    };
    vec![
        column("Status", "string", ".status.phase"),
        column("Node", "string", ".spec.nodeName"),
        column("Age", "date", ".metadata.creationTimestamp"),
    ]
}

/// A built-in kind whose status is written through `/status`, as kubelet writes a Pod's.
fn with_status(resource: Resource) -> Resource {
    Resource {
        status_subresource: true,
        ..resource
    }
}

/// The kinds of kubectl's default prune list (`kubectl apply --prune` without an allowlist
/// lists each of them and fails on one the server does not know) that are served for that
/// alone, as stored objects: nothing runs them here. Namespaces, Pods, Secrets and ConfigMaps,
/// also on the list, are served for themselves. (group, version, plural, kind, namespaced,
/// short names)
type Kind = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
);
const PRUNE_LIST_KINDS: [Kind; 12] = [
    ("", "v1", "endpoints", "Endpoints", true, &["ep"]),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
    ),
    (
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
    ),
    (
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        true,
        &["rc"],
    ),
    ("", "v1", "services", "Service", true, &["svc"]),
    ("batch", "v1", "jobs", "Job", true, &[]),
    ("batch", "v1", "cronjobs", "CronJob", true, &["cj"]),
    (
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        &["ing"],
    ),
    ("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"]),
    ("apps", "v1", "deployments", "Deployment", true, &["deploy"]),
    ("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"]),
    ("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"]),
];

/// The resources a fresh server serves before any CRD.
fn builtins() -> Vec<Resource> {
    let prune_list =
        PRUNE_LIST_KINDS
            .iter()
            .map(|(group, version, plural, kind, namespaced, short_names)| {
                let storage = if group.is_empty() {
                    (*plural).to_owned()
                } else {
                    format!("{group}/{plural}")
                };
                builtin(
                    group,
                    version,
                    plural,
                    kind,
                    *namespaced,
                    short_names,
                    &storage,
                )
            });
    let mut resources = vec![
        // Pods and Nodes as kubelet and kube-scheduler leave them, so that what reads them
        // (placement beside Kubernetes) runs and is tested without a kubelet.
        Resource {
            columns: pod_columns(),
            ..with_status(builtin("", "v1", "pods", "Pod", true, &["po"], "pods"))
        },
        Resource {
            role: Role::Node,
            ..with_status(builtin("", "v1", "nodes", "Node", false, &["no"], "nodes"))
        },
        Resource {
            role: Role::Namespace,
            ..builtin(
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                &["ns"],
                "namespaces",
            )
        },
        builtin("", "v1", "secrets", "Secret", true, &[], "secrets"),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            "configmaps",
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], "events"),
        Resource {
            role: Role::EventsApiEvent,
            ..builtin(
                "events.k8s.io",
                "v1",
                "events",
                "Event",
                true,
                &["ev"],
                "events",
            )
        },
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            "leases",
        ),
        Resource {
            role: Role::Definition,
            ..builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                &["crd", "crds"],
                "customresourcedefinitions",
            )
        },
    ];
    resources.extend(prune_list);
    resources
}

/// Every servable resource.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: Arc<RwLock<Vec<Resource>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            resources: Arc::new(RwLock::new(builtins())),
        }
    }
}

impl Registry {
    /// Every resource.
    pub fn all(&self) -> Vec<Resource> {
        self.resources.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// The resource at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.resources
            .read()
            .ok()?
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// Groups with their versions, in a stable order (core first).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for resource in self.all() {
            let versions = groups.entry(resource.group.clone()).or_default();
            if !versions.contains(&resource.version) {
                versions.push(resource.version.clone());
            }
        }
        groups
    }

    /// Serves a CRD's kind (or updates it); [`CrdError::Pattern`] when its schema's patterns
    /// do not compile.
    pub fn install_crd(&self, crd: &CustomResourceDefinition) -> Result<(), CrdError> {
        let spec = &crd.spec;
        let mut added = Vec::new();
        for version in spec.versions.iter().filter(|v| v.served) {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.clone());
            let validator = match &schema {
                Some(schema) => Some(Arc::new(SchemaValidator::new(schema.clone())?)),
                None => None,
            };
            added.push(Resource {
                group: spec.group.clone(),
                version: version.name.clone(),
                plural: spec.names.plural.clone(),
                singular: spec
                    .names
                    .singular
                    .clone()
                    .unwrap_or_else(|| spec.names.kind.to_lowercase()),
                kind: spec.names.kind.clone(),
                namespaced: spec.scope == "Namespaced",
                short_names: spec.names.short_names.clone().unwrap_or_default(),
                categories: spec.names.categories.clone().unwrap_or_default(),
                status_subresource: version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                scale: version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.scale.as_ref())
                    .map(|scale| ScalePaths {
                        spec_replicas: scale.spec_replicas_path.clone(),
                        status_replicas: scale.status_replicas_path.clone(),
                        label_selector: scale.label_selector_path.clone(),
                    }),
                custom: true,
                columns: version
                    .additional_printer_columns
                    .clone()
                    .unwrap_or_default(),
                // Shared: every request's lookup copies its resource.
                schema: schema.map(Arc::new),
                validator,
                storage: format!("{}/{}", spec.group, spec.names.plural),
                role: custom_role(&spec.group, &spec.names.kind),
            });
        }
        if let Ok(mut resources) = self.resources.write() {
            resources
                .retain(|r| !(r.custom && r.group == spec.group && r.plural == spec.names.plural));
            resources.extend(added);
        }
        Ok(())
    }

    /// Stops serving a CRD's kind.
    pub fn remove_crd(&self, crd: &CustomResourceDefinition) {
        if let Ok(mut resources) = self.resources.write() {
            resources.retain(|r| {
                !(r.custom && r.group == crd.spec.group && r.plural == crd.spec.names.plural)
            });
        }
    }
}

/// What a custom kind does beyond being stored: our own kinds that carry a container spec are
/// admitted by their cluster's guardrails.
fn custom_role(group: &str, kind: &str) -> Role {
    match lxd_operator_crds::admission::container_spec_pointer(kind) {
        Some(pointer) if group == lxd_operator_crds::GROUP => Role::ContainerSpecAt(pointer),
        _ => Role::Plain,
    }
}
