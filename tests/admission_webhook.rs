//! On Kubernetes, the operator's validating webhook refuses what the embedded API server refuses
//! standalone, in the same words. Here the webhook (`lxd-operator admission-webhook`) reads
//! the embedded API server as its Kubernetes API, and the test posts AdmissionReviews to it as
//! a Kubernetes API server would: guardrails, a namespace the cluster does not admit, a quota
//! with its figures, an update that only keeps what was admitted before, and requests that are
//! no reviews at all; and the controller serving it as the chart runs it. No LXD is needed: the
//! LxdCluster points where no LXD listens, and has no client Secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lxd_operator_tests::operator::{Mode, Operator};
use lxd_operator_tests::operator_binary;
use serde_json::{Value, json};

/// The LxdCluster `local`: the default guardrails, namespaces labelled `tenant: "yes"`, and a
/// quota of two containers and two CPUs per namespace; no LXD behind it.
const CLUSTER: &str = r#"{"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdCluster",
  "metadata": {"name": "local"},
  "spec": {"endpoints": ["https://127.0.0.1:1"],
    "clientCertSecretRef": {"namespace": "default", "name": "lxd-local-client"},
    "serverCertificate": {"fingerprint": "abababababababababababababababababababababababababababababababab"},
    "namespaceSelector": {"matchLabels": {"tenant": "yes"}},
    "quotas": {"default": {"containers": 2, "cpu": 2}}}}"#;

/// `lxd-operator admission-webhook`, serving with a certificate of the test's own CA, and a
/// client that trusts that CA only.
struct Webhook {
    child: Child,
    url: String,
    client: reqwest::Client,
    _tls: tempfile::TempDir,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    /// `lxd-operator admission-webhook`: the webhook alone.
    fn start(api: &Operator) -> Webhook {
        Self::start_against(&api.kubeconfig())
    }

    /// `lxd-operator admission-webhook` against the API in `kubeconfig`.
    fn start_against(kubeconfig: &std::path::Path) -> Webhook {
        Self::spawn(kubeconfig, |cert, key| {
            vec![
                "admission-webhook".to_owned(),
                "--listen=127.0.0.1:0".to_owned(),
                format!("--cert={cert}"),
                format!("--key={key}"),
            ]
        })
    }

    /// `lxd-operator run` with the flags the chart gives it: the controller, with the webhook
    /// beside it.
    fn start_in_controller(api: &Operator) -> Webhook {
        Self::spawn(&api.kubeconfig(), |cert, key| {
            vec![
                "run".to_owned(),
                "--metrics-addr=127.0.0.1:0".to_owned(),
                "--leader-election".to_owned(),
                "--admission-webhook-listen=127.0.0.1:0".to_owned(),
                format!("--admission-webhook-cert={cert}"),
                format!("--admission-webhook-key={key}"),
            ]
        })
    }

    /// Runs the binary against the API in `kubeconfig`, with the arguments `args` makes of the
    /// certificate and key paths.
    fn spawn(kubeconfig: &std::path::Path, args: impl Fn(&str, &str) -> Vec<String>) -> Webhook {
        let tls = tempfile::tempdir().unwrap();
        let (cert, key) = (tls.path().join("tls.crt"), tls.path().join("tls.key"));
        let ca = write_serving_pair(&cert, &key);
        let mut child = Command::new(operator_binary())
            .args(args(cert.to_str().unwrap(), key.to_str().unwrap()))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", "default")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lxd-operator");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let url = loop {
            let line = receiver
                .recv_timeout(Duration::from_secs(30))
                .expect("the webhook says where it listens");
            if let Some(url) = line.strip_prefix("admission webhook listening on ") {
                break url.trim().to_owned();
            }
        };

        let client = client_trusting(ca);
        Webhook {
            child,
            url,
            client,
            _tls: tls,
        }
    }

    /// Renews the serving certificate in place, from another CA, as a renewed Secret reaches
    /// a pod's mount; the client trusts the new CA only.
    fn renew(&mut self) {
        let dir = self._tls.path();
        let ca = write_serving_pair(&dir.join("tls.crt"), &dir.join("tls.key"));
        self.client = client_trusting(ca);
    }

    /// Posts `body` as is; the HTTP status and the JSON answer.
    async fn post(&self, body: String) -> (u16, Value) {
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        (code, response.json().await.unwrap())
    }

    /// The response of the AdmissionReview of `operation` on `object` (and `old`).
    async fn review(&self, operation: &str, object: &Value, old: Option<&Value>) -> Value {
        let kind = object["kind"].as_str().unwrap();
        let plural = format!("{}s", kind.to_lowercase());
        let mut request = json!({
            "uid": "7d6f2c1e-0000-4000-8000-000000000001",
            "kind": {"group": "lxd-operator.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "lxd-operator.dev", "version": "v1alpha1", "resource": plural},
            "namespace": object["metadata"]["namespace"],
            "name": object["metadata"]["name"],
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": false,
        });
        if let Some(old) = old {
            request["oldObject"] = old.clone();
        }
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        let (code, answer) = self.post(review.to_string()).await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"],
            "7d6f2c1e-0000-4000-8000-000000000001"
        );
        answer["response"].clone()
    }
}

/// Writes a serving certificate for 127.0.0.1 and its key, signed by a new CA; returns the CA.
fn write_serving_pair(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> rustls::pki_types::CertificateDer<'static> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let serving_key = KeyPair::generate().unwrap();
    let serving = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&serving_key, &issuer)
        .unwrap();
    // The key first, then the certificate: the webhook reads the pair once both are new.
    std::fs::write(key, serving_key.serialize_pem()).unwrap();
    std::fs::write(cert, serving.pem()).unwrap();
    ca.der().clone()
}

/// An HTTPS client that trusts `ca` only.
fn client_trusting(ca: rustls::pki_types::CertificateDer<'static>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls_config)
        .build()
        .unwrap()
}

/// An LxdContainer asking for `cpu` cores, with `extra` spec fields.
fn container(namespace: &str, name: &str, cpu: f64, extra: Value) -> Value {
    let mut spec = json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"},
        "resources": {"cpu": cpu, "memory": "64Mi"}});
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn tenant_namespace(api: &Operator, prefix: &str) -> String {
    let namespace = api.namespace(prefix);
    api.kubectl_ok(&["label", "namespace", &namespace, "tenant=yes"]);
    namespace
}

/// The refusal's message, after checking it is a refusal with `code`.
fn refused(response: &Value, code: u16) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], code, "{response}");
    response["status"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_webhook_refuses_what_the_embedded_server_refuses_in_the_same_words() {
    let api = Operator::start(Mode::Apiserver);
    api.apply(CLUSTER);
    let webhook = Webhook::start(&api);
    let team = tenant_namespace(&api, "team");

    // Ways out to the host, each refused naming the key.
    let escapes = [
        (
            json!({"config": {"security.privileged": "true"}}),
            r#"spec.config["security.privileged"]"#,
        ),
        (
            json!({"config": {"raw.lxc": "lxc.apparmor.profile=unconfined"}}),
            r#"spec.config["raw.lxc"]"#,
        ),
        (
            json!({"devices": {"host": {"type": "disk", "source": "/", "path": "/host"}}}),
            r#"spec.devices["host"].source"#,
        ),
    ];
    for (fields, field) in escapes {
        let object = container(&team, "escape", 0.5, fields);
        let response = webhook.review("CREATE", &object, None).await;
        let message = refused(&response, 422);
        assert_eq!(response["status"]["reason"], "Invalid");
        assert!(
            message.contains(field) && message.contains("denied by cluster local's policy"),
            "{message}"
        );
        assert_eq!(
            response["status"]["details"]["causes"][0]["field"], field,
            "{response}"
        );
        // The embedded API server refuses the same object with the same field error (kubectl
        // words the rest of an Invalid answer itself).
        let applied = api.kubectl_with_input(&["create", "-f", "-"], &object.to_string());
        assert!(!applied.status.success());
        let kubectl = String::from_utf8_lossy(&applied.stderr);
        let (_, field_error) = message.split_once(" is invalid: ").unwrap();
        assert!(
            kubectl.contains(field_error),
            "{kubectl}\nwebhook: {message}"
        );
    }

    // A set is refused naming the field under its template.
    let set = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
        "metadata": {"name": "fleet", "namespace": team},
        "spec": {"replicas": 2, "template": {"spec": {"clusterRef": {"name": "local"},
            "image": {"alias": "busybox"}, "config": {"security.privileged": "true"}}}}});
    let message = refused(&webhook.review("CREATE", &set, None).await, 422);
    assert!(
        message.contains(r#"spec.template.spec.config["security.privileged"]"#),
        "{message}"
    );

    // What the guardrails allow is allowed; a delete is not looked at.
    let ordinary = container(
        &team,
        "web",
        0.5,
        json!({"config": {"user.role": "web"},
            "devices": {"data": {"type": "disk", "pool": "default", "source": "data", "path": "/data"}}}),
    );
    let response = webhook.review("CREATE", &ordinary, None).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        webhook.review("DELETE", &ordinary, Some(&ordinary)).await["allowed"],
        true
    );

    // A namespace the cluster's selector does not select.
    let outsider = api.namespace("outsider");
    let message = refused(
        &webhook
            .review("CREATE", &container(&outsider, "web", 0.5, json!({})), None)
            .await,
        422,
    );
    assert!(
        message.contains("spec.clusterRef.name")
            && message.contains(&format!("namespace {outsider} is not admitted to cluster local (its namespaceSelector tenant=yes")),
        "{message}"
    );
}

#[tokio::test]
async fn a_quota_counts_what_is_stored_and_what_was_just_admitted_and_refuses_with_the_figures() {
    let api = Operator::start(Mode::Apiserver);
    api.apply(CLUSTER);
    let webhook = Webhook::start(&api);
    let team = tenant_namespace(&api, "quota");
    api.apply(&container(&team, "first", 1.0, json!({})).to_string());

    // A second fits (two containers, 1.5 CPUs); the API server has not stored it yet when a
    // third comes, as in a burst of a set's children, and the third is counted against both.
    let second = webhook
        .review("CREATE", &container(&team, "second", 0.5, json!({})), None)
        .await;
    assert_eq!(second["allowed"], true, "{second}");
    let third = webhook
        .review("CREATE", &container(&team, "third", 0.5, json!({})), None)
        .await;
    let message = refused(&third, 403);
    assert_eq!(third["status"]["reason"], "Forbidden");
    assert_eq!(
        message,
        format!(
            "lxdcontainers.lxd-operator.dev \"third\" is forbidden: exceeded quota of namespace {team} on cluster local: requested: containers=1,cpu=0.5, used: containers=2,cpu=1.5, limited: containers=2,cpu=2"
        )
    );

    // Under a CPU quota a container says how much it asks.
    let mut unmeasured = container(&team, "unmeasured", 0.5, json!({}));
    unmeasured["spec"]
        .as_object_mut()
        .unwrap()
        .remove("resources");
    let message = refused(&webhook.review("CREATE", &unmeasured, None).await, 403);
    assert!(message.contains("must specify resources.cpu"), "{message}");

    // An update of a stored container that asks for no more is not counted.
    let first = container(&team, "first", 1.0, json!({}));
    let mut relabelled = first.clone();
    relabelled["metadata"]["labels"] = json!({"tier": "web"});
    let response = webhook.review("UPDATE", &relabelled, Some(&first)).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn an_update_keeping_a_value_admitted_before_is_allowed_and_one_adding_a_refused_value_is_not()
 {
    let api = Operator::start(Mode::Apiserver);
    api.apply(CLUSTER);
    let webhook = Webhook::start(&api);
    let team = tenant_namespace(&api, "ratchet");
    // Admitted when the cluster allowed nesting; the policy has tightened since.
    let nested = container(
        &team,
        "ci",
        0.5,
        json!({"config": {"security.nesting": "true"}}),
    );
    let mut relabelled = nested.clone();
    relabelled["metadata"]["labels"] = json!({"tier": "ci"});
    let response = webhook.review("UPDATE", &relabelled, Some(&nested)).await;
    assert_eq!(response["allowed"], true, "{response}");

    let mut more = nested.clone();
    more["spec"]["config"]["raw.lxc"] = json!("lxc.apparmor.profile=unconfined");
    let response = webhook.review("UPDATE", &more, Some(&nested)).await;
    let message = refused(&response, 422);
    assert!(message.contains(r#"spec.config["raw.lxc"]"#), "{message}");
    assert!(
        !message.contains("security.nesting"),
        "only what the update adds is refused: {message}"
    );
}

#[tokio::test]
async fn a_request_that_is_no_review_is_answered_with_a_clear_error_and_the_webhook_keeps_serving()
{
    let api = Operator::start(Mode::Apiserver);
    api.apply(CLUSTER);
    let webhook = Webhook::start(&api);

    let (code, status) = webhook.post("not json".to_owned()).await;
    assert_eq!(code, 400);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("the body is not JSON"),
        "{status}"
    );
    let (code, status) = webhook
        .post(
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"})
                .to_string(),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("admissionReviewVersions [v1]"),
        "{status}"
    );
    let (code, status) = webhook
        .post(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}})
                .to_string(),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        status["message"].as_str().unwrap().contains("request.uid"),
        "{status}"
    );

    // A review whose object has no container spec is denied saying which field.
    let mut shapeless = container("default", "shapeless", 0.5, json!({}));
    shapeless["spec"] = json!("not an object");
    let message = refused(&webhook.review("CREATE", &shapeless, None).await, 400);
    assert!(
        message.contains("spec: cannot be read as a container spec"),
        "{message}"
    );

    // Still serving.
    let team = tenant_namespace(&api, "after");
    let object = container(&team, "web", 0.5, json!({}));
    let response = webhook.review("CREATE", &object, None).await;
    assert_eq!(response["allowed"], true, "{response}");

    // A webhook that may not read the API answers 500 saying what it could not read, and the
    // webhook configuration's failurePolicy decides.
    let kubeconfig = std::fs::read_to_string(api.kubeconfig()).unwrap();
    let refused_token = kubeconfig.replace(&api.token(), "not-the-token");
    let elsewhere = tempfile::tempdir().unwrap();
    let refused_kubeconfig = elsewhere.path().join("kubeconfig");
    std::fs::write(&refused_kubeconfig, refused_token).unwrap();
    let blind = Webhook::start_against(&refused_kubeconfig);
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "namespace": team, "name": "web",
            "kind": {"group": "lxd-operator.dev", "version": "v1alpha1", "kind": "LxdContainer"},
            "resource": {"group": "lxd-operator.dev", "version": "v1alpha1", "resource": "lxdcontainers"},
            "object": object}});
    let (code, status) = blind.post(review.to_string()).await;
    assert_eq!(code, 500, "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("the admission webhook cannot decide: cannot read LxdCluster local"),
        "{message}"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let api = Operator::start(Mode::Apiserver);
    api.apply(CLUSTER);
    let mut webhook = Webhook::start(&api);
    let team = tenant_namespace(&api, "renew");
    let object = container(&team, "web", 0.5, json!({}));
    assert_eq!(
        webhook.review("CREATE", &object, None).await["allowed"],
        true
    );
    webhook.renew();
    assert_eq!(
        webhook.review("CREATE", &object, None).await["allowed"],
        true
    );
}

#[tokio::test]
async fn the_controller_serves_the_webhook_as_the_chart_runs_it() {
    let api = Operator::start(Mode::Apiserver);
    api.apply(CLUSTER);
    let webhook = Webhook::start_in_controller(&api);
    let team = tenant_namespace(&api, "run");
    let privileged = container(
        &team,
        "root",
        0.5,
        json!({"config": {"security.privileged": "true"}}),
    );
    let message = refused(&webhook.review("CREATE", &privileged, None).await, 422);
    assert!(
        message.contains(r#"spec.config["security.privileged"]"#),
        "{message}"
    );
    let ordinary = container(&team, "web", 0.5, json!({}));
    assert_eq!(
        webhook.review("CREATE", &ordinary, None).await["allowed"],
        true
    );
}
