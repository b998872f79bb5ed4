//! The Helm chart, rendered and linted by Helm's own library (`hack/chart.py`, PyPI
//! helm-python-sdk): every object parses as its Kubernetes type, the pod passes the restricted
//! Pod Security Standard, the CRDs are the generated ones, and bad values are refused with a
//! message naming them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use lxd_operator_crds::LxdCluster;
use lxd_operator_tests::repo_root;
use serde_json::{Value, json};

/// The namespace hack/chart.py installs the release into.
const NAMESPACE: &str = "lxd-system";

struct Rendered {
    objects: Vec<Value>,
    crds: Vec<String>,
    lint_errors: Vec<String>,
}

fn render(values: Value) -> Result<Rendered, String> {
    let output = Command::new(lxd_operator_tests::python())
        .arg(repo_root().join("hack/chart.py"))
        .arg(values.to_string())
        .output()
        .expect("run hack/chart.py (python3 with helm-python-sdk; hack/test.sh installs it)");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut objects = Vec::new();
    for (path, manifest) in report["templates"].as_object().unwrap() {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        for document in manifest.as_str().unwrap().split("\n---") {
            if document
                .lines()
                .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
            {
                continue;
            }
            let object: Value = serde_saphyr::from_str(document)
                .unwrap_or_else(|e| panic!("{path} is not YAML: {e}\n{document}"));
            objects.push(object);
        }
    }
    let crds = report["crds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|crd| crd["data"].as_str().unwrap().to_owned())
        .collect();
    let lint_errors = report["lint"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64() >= Some(3))
        .map(|m| m.to_string())
        .collect();
    Ok(Rendered {
        objects,
        crds,
        lint_errors,
    })
}

/// Parses an object as the k8s-openapi type of its kind.
fn check_type(object: &Value) {
    let kind = object["kind"].as_str().unwrap();
    let value = object.clone();
    let parsed = match kind {
        "Deployment" => serde_json::from_value::<Deployment>(value).map(drop),
        "ServiceAccount" => serde_json::from_value::<ServiceAccount>(value).map(drop),
        "ClusterRole" => serde_json::from_value::<ClusterRole>(value).map(drop),
        "ClusterRoleBinding" => serde_json::from_value::<ClusterRoleBinding>(value).map(drop),
        "Role" => serde_json::from_value::<Role>(value).map(drop),
        "RoleBinding" => serde_json::from_value::<RoleBinding>(value).map(drop),
        "Service" => serde_json::from_value::<Service>(value).map(drop),
        "PodDisruptionBudget" => serde_json::from_value::<PodDisruptionBudget>(value).map(drop),
        "Secret" => serde_json::from_value::<Secret>(value).map(drop),
        "ValidatingWebhookConfiguration" => {
            serde_json::from_value::<ValidatingWebhookConfiguration>(value).map(drop)
        }
        "LxdCluster" => serde_json::from_value::<LxdCluster>(value).map(drop),
        // No k8s-openapi type: the Prometheus Operator's CRD.
        "ServiceMonitor" => {
            assert_eq!(object["spec"]["endpoints"][0]["port"], "metrics");
            Ok(())
        }
        other => panic!("unexpected kind {other} in the chart"),
    };
    parsed.unwrap_or_else(|e| {
        panic!("{kind} does not parse as its Kubernetes type: {e}\n{object:#}")
    });
}

fn of_kind<'a>(rendered: &'a Rendered, kind: &str) -> Vec<&'a Value> {
    rendered
        .objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .collect()
}

/// The restricted Pod Security Standard, as the API server's admission checks it.
fn assert_restricted(deployment: &Deployment) {
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    assert!(pod.volumes.iter().flatten().all(|v| v.host_path.is_none()));
    for container in &pod.containers {
        let security = container
            .security_context
            .as_ref()
            .expect("container securityContext");
        assert_eq!(
            security.allow_privilege_escalation,
            Some(false),
            "{}",
            container.name
        );
        assert_eq!(
            security.read_only_root_filesystem,
            Some(true),
            "{}",
            container.name
        );
        assert_eq!(security.privileged, None);
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert!(security.capabilities.as_ref().unwrap().add.is_none());
        let resources = container.resources.as_ref().expect("resources");
        assert!(
            resources.requests.is_some() && resources.limits.is_some(),
            "requests and limits"
        );
        assert_eq!(
            container
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            container
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
    }
}

#[test]
fn the_default_chart_renders_lints_and_every_object_is_a_valid_kubernetes_object() {
    let rendered = render(json!({})).unwrap();
    assert!(
        rendered.lint_errors.is_empty(),
        "helm lint: {:?}",
        rendered.lint_errors
    );
    for object in &rendered.objects {
        check_type(object);
    }
    let kinds: BTreeMap<&str, usize> =
        rendered
            .objects
            .iter()
            .fold(BTreeMap::new(), |mut kinds, o| {
                *kinds.entry(o["kind"].as_str().unwrap()).or_default() += 1;
                kinds
            });
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            ("Deployment", 1),
            // Leader election's Lease, and Secrets in the release's namespace.
            ("Role", 2),
            ("RoleBinding", 2),
            // The admission webhook's TLS.
            ("Secret", 1),
            // Metrics and the admission webhook.
            ("Service", 2),
            ("ServiceAccount", 1),
            ("ValidatingWebhookConfiguration", 1)
        ])
    );
    let deployment: Deployment =
        serde_json::from_value(of_kind(&rendered, "Deployment")[0].clone()).unwrap();
    assert_restricted(&deployment);
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
}

#[test]
fn the_chart_crds_are_the_generated_ones() {
    let rendered = render(json!({})).unwrap();
    assert_eq!(
        rendered.crds,
        [lxd_operator_crds::generate::crd_yaml().unwrap()],
        "the chart's CRDs differ from `lxd-operator crds`"
    );
}

#[test]
fn rbac_grants_what_the_controller_uses_and_secrets_can_be_narrowed_to_one_namespace() {
    let rendered = render(json!({})).unwrap();
    let role: ClusterRole =
        serde_json::from_value(of_kind(&rendered, "ClusterRole")[0].clone()).unwrap();
    let rules = role.rules.unwrap();
    let grants = |resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
            .flat_map(|r| r.verbs.clone())
            .collect()
    };
    assert!(grants("lxdcontainers").contains(&"watch".to_owned()));
    assert!(grants("lxdcontainers/status").contains(&"patch".to_owned()));
    assert_eq!(grants("lxdcontainers/finalizers"), ["update"]);
    // A set makes and removes its children, and names itself their owner.
    for verb in ["create", "delete", "update"] {
        assert!(grants("lxdcontainers").contains(&verb.to_owned()), "{verb}");
    }
    assert!(grants("lxdcontainersets").contains(&"watch".to_owned()));
    assert!(grants("lxdcontainersets/status").contains(&"patch".to_owned()));
    assert_eq!(grants("lxdcontainersets/finalizers"), ["update"]);
    assert!(grants("events").contains(&"create".to_owned()));
    assert!(grants("pods").is_empty() && grants("deployments").is_empty());

    // Secrets are read in one namespace only: the release's own by default, another when
    // rbac.secretsNamespace names it, every one only when it says "*". The controller is told
    // the same namespace, and refuses references elsewhere.
    let secrets_role_namespace = |rendered: &Rendered| -> Vec<String> {
        of_kind(rendered, "Role")
            .iter()
            .filter(|r| {
                r["rules"].as_array().into_iter().flatten().any(|rule| {
                    rule["resources"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|x| x == "secrets"))
                })
            })
            .map(|r| r["metadata"]["namespace"].as_str().unwrap().to_owned())
            .collect()
    };
    let controller_args = |rendered: &Rendered| -> Vec<String> {
        of_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        grants("secrets").is_empty(),
        "no Secrets everywhere by default"
    );
    assert_eq!(secrets_role_namespace(&rendered), [NAMESPACE]);
    assert!(controller_args(&rendered).contains(&format!("--secrets-namespace={NAMESPACE}")));

    let narrowed = render(json!({"rbac": {"secretsNamespace": "lxd-secrets"}})).unwrap();
    assert_eq!(secrets_role_namespace(&narrowed), ["lxd-secrets"]);
    assert!(controller_args(&narrowed).contains(&"--secrets-namespace=lxd-secrets".to_owned()));

    let everywhere = render(json!({"rbac": {"secretsNamespace": "*"}})).unwrap();
    let cluster_role: ClusterRole =
        serde_json::from_value(of_kind(&everywhere, "ClusterRole")[0].clone()).unwrap();
    assert!(
        cluster_role.rules.unwrap().iter().any(|r| r
            .resources
            .iter()
            .flatten()
            .any(|x| x == "secrets"))
    );
    assert!(secrets_role_namespace(&everywhere).is_empty());
    assert!(controller_args(&everywhere).contains(&"--secrets-namespace=*".to_owned()));
}

#[test]
fn two_replicas_a_service_monitor_and_extra_labels() {
    let rendered = render(json!({
        "replicaCount": 2,
        "metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}}},
        "commonLabels": {"team": "platform"},
        "podDisruptionBudget": {"enabled": true},
    }))
    .unwrap();
    assert!(
        rendered.lint_errors.is_empty(),
        "{:?}",
        rendered.lint_errors
    );
    for object in &rendered.objects {
        check_type(object);
        assert_eq!(
            object["metadata"]["labels"]["team"], "platform",
            "{} lacks the extra label",
            object["kind"]
        );
    }
    let deployment: Deployment =
        serde_json::from_value(of_kind(&rendered, "Deployment")[0].clone()).unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    assert_restricted(&deployment);
    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--leader-election".to_owned()), "{args:?}");
    assert_eq!(
        of_kind(&rendered, "ServiceMonitor")[0]["metadata"]["labels"]["release"],
        "prometheus"
    );
    assert_eq!(of_kind(&rendered, "PodDisruptionBudget").len(), 1);
}

#[test]
fn an_lxd_cluster_and_its_secret_can_come_from_values() {
    let rendered = render(json!({"lxdCluster": {
        "create": true,
        "endpoints": ["https://10.0.0.1:8443"],
        "serverCertificateFingerprint": "ab".repeat(32),
        "clientCertificate": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        "clientKey": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
    }}))
    .unwrap();
    for object in &rendered.objects {
        check_type(object);
    }
    let cluster: LxdCluster =
        serde_json::from_value(of_kind(&rendered, "LxdCluster")[0].clone()).unwrap();
    let client_secret = cluster.spec.client_cert_secret_ref.unwrap().name;
    assert!(
        of_kind(&rendered, "Secret")
            .iter()
            .any(|secret| secret["metadata"]["name"] == client_secret.as_str()),
        "no Secret {client_secret}"
    );
}

#[test]
fn values_that_break_the_schema_fail_with_a_message_naming_them() {
    let cases = [
        (json!({"replicaCount": 0}), "replicaCount"),
        (json!({"logFormat": "xml"}), "logFormat"),
        (json!({"image": {"pullPolicy": "Sometimes"}}), "pullPolicy"),
        (json!({"metrics": {"port": "eighty"}}), "port"),
        (
            json!({"admissionWebhook": {"failurePolicy": "Sometimes"}}),
            "failurePolicy",
        ),
        (
            json!({"admissionWebhook": {"timeoutSeconds": 31}}),
            "timeoutSeconds",
        ),
        (
            json!({"admissionWebhook": {"port": 8080}}),
            "admissionWebhook.port (8080) must differ from metrics.port",
        ),
        (json!({"no": "such value"}), "no"),
        (
            json!({"lxdCluster": {"create": true}}),
            "lxdCluster.endpoints",
        ),
        // One replica and a budget keeping one: no node could ever be drained.
        (
            json!({"podDisruptionBudget": {"enabled": true}}),
            "podDisruptionBudget.minAvailable (1) must be below replicaCount (1)",
        ),
        (
            json!({"replicaCount": 3, "podDisruptionBudget": {"enabled": true, "minAvailable": "100%"}}),
            "podDisruptionBudget.minAvailable \"100%\"",
        ),
    ];
    for (values, named) in cases {
        let error = render(values.clone())
            .err()
            .unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(error.contains(named), "{values}: {error}");
    }
}

/// The one served container of the Deployment.
fn controller_container(rendered: &Rendered) -> k8s_openapi::api::core::v1::Container {
    let deployment: Deployment =
        serde_json::from_value(of_kind(rendered, "Deployment")[0].clone()).unwrap();
    deployment.spec.unwrap().template.spec.unwrap().containers[0].clone()
}

#[test]
fn the_admission_webhook_is_registered_for_containers_and_sets_and_served_with_its_certificate() {
    let rendered = render(json!({})).unwrap();
    assert!(
        rendered.lint_errors.is_empty(),
        "{:?}",
        rendered.lint_errors
    );
    let configuration: ValidatingWebhookConfiguration =
        serde_json::from_value(of_kind(&rendered, "ValidatingWebhookConfiguration")[0].clone())
            .unwrap();
    let webhooks = configuration.webhooks.unwrap();
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    assert_eq!(webhook.admission_review_versions, ["v1"]);
    assert_eq!(webhook.side_effects, "None");
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(webhook.timeout_seconds, Some(10));
    let rules = webhook.rules.clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&[lxd_operator_crds::GROUP.to_owned()][..])
    );
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_owned(), "UPDATE".to_owned()][..])
    );
    // The plurals the CRDs serve, of the kinds admission looks at.
    let plurals: Vec<String> = lxd_operator_crds::generate::all_crds()
        .into_iter()
        .filter(|crd| {
            lxd_operator_crds::admission::container_spec_pointer(&crd.spec.names.kind).is_some()
        })
        .map(|crd| crd.spec.names.plural)
        .collect();
    assert_eq!(rules[0].resources.as_deref(), Some(&plurals[..]));
    assert_eq!(plurals, ["lxdcontainers", "lxdcontainersets"]);

    // The Service it names reaches the Deployment's webhook port, on the path the binary serves.
    let reference = webhook.client_config.service.clone().unwrap();
    assert_eq!(reference.namespace, "lxd-system");
    assert_eq!(
        reference.path.as_deref(),
        Some(lxd_operator::admission_webhook::PATH)
    );
    let service: Service = serde_json::from_value(
        (*of_kind(&rendered, "Service")
            .into_iter()
            .find(|s| s["metadata"]["name"] == reference.name.as_str())
            .expect("the Service the webhook names"))
        .clone(),
    )
    .unwrap();
    let port = &service.spec.unwrap().ports.unwrap()[0];
    assert_eq!(Some(port.port), reference.port);
    let target = port.target_port.clone().unwrap();
    let container = controller_container(&rendered);
    let container_port = container
        .ports
        .iter()
        .flatten()
        .find(|p| {
            target
                == k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                    p.name.clone().unwrap_or_default(),
                )
        })
        .expect("the Service's target port is a named port of the container");
    let args = container.args.clone().unwrap();
    assert!(
        args.contains(&format!(
            "--admission-webhook-listen=0.0.0.0:{}",
            container_port.container_port
        )),
        "{args:?}"
    );

    // The pods serve the Secret's certificate, which the caBundle's CA signed for the
    // Service's name.
    let mount = container.volume_mounts.clone().unwrap()[0].clone();
    assert_eq!(mount.read_only, Some(true));
    for file in ["tls.crt", "tls.key"] {
        let flag = if file == "tls.crt" { "cert" } else { "key" };
        assert!(
            args.contains(&format!(
                "--admission-webhook-{flag}={}/{file}",
                mount.mount_path
            )),
            "{args:?}"
        );
    }
    let deployment: Deployment =
        serde_json::from_value(of_kind(&rendered, "Deployment")[0].clone()).unwrap();
    let volumes = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .volumes
        .unwrap();
    let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
    let secret_name = volume.secret.clone().unwrap().secret_name.unwrap();
    let secret: Secret = serde_json::from_value(
        (*of_kind(&rendered, "Secret")
            .into_iter()
            .find(|s| s["metadata"]["name"] == secret_name.as_str())
            .expect("the Secret the pods mount"))
        .clone(),
    )
    .unwrap();
    let data = secret.data.unwrap();
    let ca_bundle = webhook.client_config.ca_bundle.clone().unwrap();
    assert_eq!(ca_bundle, data["ca.crt"]);
    assert!(String::from_utf8_lossy(&data["tls.key"].0).contains("PRIVATE KEY"));
    assert_served_certificate_verifies(
        &ca_bundle.0,
        &data["tls.crt"].0,
        &format!("{}.lxd-system.svc", reference.name),
    );

    // The pods' ServiceAccount may read what the webhook reads: the cluster, the namespace's
    // labels, the namespace's containers.
    let role: ClusterRole =
        serde_json::from_value(of_kind(&rendered, "ClusterRole")[0].clone()).unwrap();
    let rules = role.rules.unwrap();
    for (group, resource, verb) in [
        ("lxd-operator.dev", "lxdclusters", "get"),
        ("", "namespaces", "get"),
        ("lxd-operator.dev", "lxdcontainers", "list"),
    ] {
        assert!(
            rules.iter().any(|rule| {
                rule.api_groups.iter().flatten().any(|g| g == group)
                    && rule.resources.iter().flatten().any(|r| r == resource)
                    && rule.verbs.iter().any(|v| v == verb)
            }),
            "the ClusterRole does not grant {verb} {resource}"
        );
    }
}

/// `certificate` (PEM) is valid for `name` under the CA in `ca` (PEM), as the API server checks
/// the webhook it calls.
fn assert_served_certificate_verifies(ca: &[u8], certificate: &[u8], name: &str) {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca).unwrap())
        .unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
    let served = CertificateDer::from_pem_slice(certificate).unwrap();
    verifier
        .verify_server_cert(
            &served,
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("the served certificate is not valid for {name}: {e}"));
}

#[test]
fn without_the_admission_webhook_nothing_of_it_is_rendered_and_failure_policy_is_a_value() {
    let disabled = render(json!({"admissionWebhook": {"enabled": false}})).unwrap();
    assert!(
        disabled.lint_errors.is_empty(),
        "{:?}",
        disabled.lint_errors
    );
    assert!(of_kind(&disabled, "ValidatingWebhookConfiguration").is_empty());
    assert!(of_kind(&disabled, "Secret").is_empty());
    assert_eq!(
        of_kind(&disabled, "Service").len(),
        1,
        "the metrics Service"
    );
    let container = controller_container(&disabled);
    assert!(
        container
            .args
            .unwrap()
            .iter()
            .all(|arg| !arg.starts_with("--admission-webhook"))
    );
    assert!(container.volume_mounts.is_none());

    let ignoring =
        render(json!({"admissionWebhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5}}))
            .unwrap();
    let configuration = of_kind(&ignoring, "ValidatingWebhookConfiguration")[0];
    assert_eq!(configuration["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(configuration["webhooks"][0]["timeoutSeconds"], 5);
}

#[test]
fn pods_and_nodes_are_granted_only_when_kubernetes_nodes_is_on() {
    let rules_of = |rendered: &Rendered| {
        let role: ClusterRole =
            serde_json::from_value(of_kind(rendered, "ClusterRole")[0].clone()).unwrap();
        role.rules.unwrap()
    };
    let grants =
        |rules: &[k8s_openapi::api::rbac::v1::PolicyRule], resource: &str| -> Vec<String> {
            rules
                .iter()
                .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
                .flat_map(|r| r.verbs.clone())
                .collect()
        };
    let args = |rendered: &Rendered| -> Vec<String> {
        let deployment: Deployment =
            serde_json::from_value(of_kind(rendered, "Deployment")[0].clone()).unwrap();
        deployment.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap_or_default()
    };
    let off = render(json!({})).unwrap();
    let rules = rules_of(&off);
    assert!(grants(&rules, "pods").is_empty() && grants(&rules, "nodes").is_empty());
    assert!(!args(&off).contains(&"--kubernetes-nodes".to_owned()));

    let on = render(json!({"kubernetesNodes": {"enabled": true}})).unwrap();
    assert!(on.lint_errors.is_empty(), "{:?}", on.lint_errors);
    let rules = rules_of(&on);
    assert_eq!(grants(&rules, "pods"), ["get", "list", "watch"]);
    assert_eq!(grants(&rules, "nodes"), ["get", "list", "watch", "patch"]);
    // Only Nodes are written, and only by patch: never Pods, never a Node's status.
    assert!(grants(&rules, "nodes/status").is_empty());
    assert!(args(&on).contains(&"--kubernetes-nodes".to_owned()));

    let refused = render(json!({"kubernetesNodes": {"enabled": "yes"}}))
        .err()
        .expect("a string for enabled is refused");
    assert!(refused.contains("kubernetesNodes"), "{refused}");
}
