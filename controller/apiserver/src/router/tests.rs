//! The API's verbs driven in-process through the router (tower's `oneshot`), without a
//! listener, TLS or the binary: one [`Api`] per test, on a store of its own.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;

const CONTAINERS: &str = "/apis/lxd-operator.dev/v1alpha1/namespaces/default/lxdcontainers";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// A server on a fresh store in a folder of its own, and the requests tests send it.
struct Api {
    router: axum::Router,
    _data: tempfile::TempDir,
}

impl Api {
    fn new() -> Api {
        let data = tempfile::tempdir().unwrap();
        let state = crate::open(data.path(), 1000).unwrap();
        Api {
            router: router(state),
            _data: data,
        }
    }

    /// Sends one request (a JSON body, of `content_type`) and returns its status and JSON.
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// Whether a watch at `path` is answered 200 and still open half a second later.
    async fn watch_stays_open(&self, path: &str) -> bool {
        use futures::StreamExt;
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return false;
        }
        let mut events = response.into_body().into_data_stream();
        let drained = async { while let Some(Ok(_)) = events.next().await {} };
        tokio::time::timeout(std::time::Duration::from_millis(500), drained)
            .await
            .is_err()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, "", None).await
    }

    async fn create(&self, object: &Value) -> (StatusCode, Value) {
        let json = "application/json";
        self.send(Method::POST, CONTAINERS, json, Some(object))
            .await
    }

    async fn put(&self, path: &str, object: &Value) -> (StatusCode, Value) {
        let json = "application/json";
        self.send(Method::PUT, path, json, Some(object)).await
    }

    async fn patch(&self, path: &str, content_type: &str, patch: &Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, content_type, Some(patch))
            .await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, "", None).await
    }
}

fn container(name: &str) -> Value {
    json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
        "metadata": {"name": name},
        "spec": {"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}}})
}

fn path_of(name: &str) -> String {
    format!("{CONTAINERS}/{name}")
}

#[tokio::test]
async fn a_created_object_is_read_back_as_stored() {
    let api = Api::new();
    let (status, created) = api.create(&container("web")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["resourceVersion"].is_string());
    assert_eq!(api.get(&path_of("web")).await, (StatusCode::OK, created));
    let (status, again) = api.create(&container("web")).await;
    assert_eq!(
        (status, again["reason"].clone()),
        (StatusCode::CONFLICT, json!("AlreadyExists"))
    );
    assert_eq!(api.get(&path_of("db")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_list_is_paged_with_continue_tokens() {
    let api = Api::new();
    for name in ["c", "a", "b"] {
        assert_eq!(api.create(&container(name)).await.0, StatusCode::CREATED);
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = api.get(CONTAINERS).await;
    assert_eq!(
        (status, names(&all)),
        (StatusCode::OK, vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(all["kind"], "LxdContainerList");
    let (_, first) = api.get(&format!("{CONTAINERS}?limit=2")).await;
    assert_eq!(names(&first), ["a", "b"]);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let (_, rest) = api
        .get(&format!("{CONTAINERS}?limit=2&continue={token}"))
        .await;
    assert_eq!(names(&rest), ["c"]);
    assert!(rest["metadata"].get("continue").is_none());
    let (status, _) = api
        .get(&format!("{CONTAINERS}?continue=not-a-token!"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_update_at_a_stale_resource_version_is_a_conflict() {
    let api = Api::new();
    let (_, created) = api.create(&container("web")).await;
    let mut changed = created.clone();
    changed["spec"]["image"]["alias"] = json!("alpine");
    let (status, updated) = api.put(&path_of("web"), &changed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    // Written from the first read: another write came in between.
    changed["spec"]["image"]["alias"] = json!("debian");
    let (status, conflict) = api.put(&path_of("web"), &changed).await;
    assert_eq!(
        (status, conflict["reason"].clone()),
        (StatusCode::CONFLICT, json!("Conflict"))
    );
    assert_eq!(
        api.get(&path_of("web")).await.1["spec"]["image"]["alias"],
        "alpine"
    );
}

#[tokio::test]
async fn merge_and_json_patches_change_what_they_name() {
    let api = Api::new();
    api.create(&container("web")).await;
    let merge =
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"image": {"alias": "alpine"}}});
    let (status, merged) = api.patch(&path_of("web"), MERGE, &merge).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(merged["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(merged["spec"]["image"]["alias"], "alpine");
    assert_eq!(merged["spec"]["clusterRef"]["name"], "local");
    let operations = json!([
        {"op": "replace", "path": "/spec/image/alias", "value": "debian"},
        {"op": "remove", "path": "/metadata/labels/app"},
    ]);
    let (status, patched) = api.patch(&path_of("web"), JSON_PATCH, &operations).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["spec"]["image"]["alias"], "debian");
    assert_eq!(patched["metadata"]["labels"], json!({}));
    assert_eq!(patched["metadata"]["generation"], 3);
    let missing = json!([{"op": "replace", "path": "/spec/nothing/here", "value": 1}]);
    let (status, _) = api.patch(&path_of("web"), JSON_PATCH, &missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_refuses_another_managers_fields_unless_forced() {
    let api = Api::new();
    let applied = |manager: &str, alias: &str, force: bool| {
        let mut object = container("web");
        object["spec"]["image"]["alias"] = json!(alias);
        let path = format!("{}?fieldManager={manager}&force={force}", path_of("web"));
        (path, object)
    };
    let (path, object) = applied("alice", "busybox", false);
    let (status, created) = api.patch(&path, APPLY, &object).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "alice");
    let (path, object) = applied("alice", "alpine", false);
    let (status, merged) = api.patch(&path, APPLY, &object).await;
    assert_eq!(
        (status, merged["spec"]["image"]["alias"].clone()),
        (StatusCode::OK, json!("alpine"))
    );
    let (path, object) = applied("bob", "debian", false);
    let (status, conflict) = api.patch(&path, APPLY, &object).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        conflict["message"].as_str().unwrap().contains("alice"),
        "{conflict}"
    );
    let (path, object) = applied("bob", "debian", true);
    let (status, forced) = api.patch(&path, APPLY, &object).await;
    assert_eq!(
        (status, forced["spec"]["image"]["alias"].clone()),
        (StatusCode::OK, json!("debian"))
    );
    let (status, _) = api.patch(&path_of("web"), APPLY, &object).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an apply names its field manager"
    );
}

#[tokio::test]
async fn a_delete_waits_for_the_finalizers_and_ends_with_the_last() {
    let api = Api::new();
    let mut object = container("web");
    object["metadata"]["finalizers"] = json!(["lxd-operator.dev/instance"]);
    api.create(&object).await;
    let (status, marked) = api.delete(&path_of("web")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (status, still) = api.get(&path_of("web")).await;
    assert_eq!(
        (status, still["metadata"]["finalizers"].clone()),
        (StatusCode::OK, object["metadata"]["finalizers"].clone())
    );
    assert_eq!(api.delete(&path_of("web")).await.0, StatusCode::ACCEPTED);
    let done = json!({"metadata": {"finalizers": null}});
    assert_eq!(
        api.patch(&path_of("web"), MERGE, &done).await.0,
        StatusCode::OK
    );
    assert_eq!(api.get(&path_of("web")).await.0, StatusCode::NOT_FOUND);
    api.create(&container("db")).await;
    assert_eq!(api.delete(&path_of("db")).await.0, StatusCode::OK);
    assert_eq!(api.get(&path_of("db")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_is_written_through_its_subresource_only() {
    let api = Api::new();
    let (_, created) = api.create(&container("web")).await;
    let status_path = format!("{}/status", path_of("web"));
    let running = json!({"status": {"phase": "Running", "member": "node1"}});
    let (code, written) = api.patch(&status_path, MERGE, &running).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(written["status"]["phase"], "Running");
    assert_eq!(
        written["metadata"]["generation"],
        created["metadata"]["generation"]
    );
    // The main resource keeps the status as it is.
    let mut replaced = written.clone();
    replaced["status"] = json!({"phase": "Stopped"});
    replaced["spec"]["image"]["alias"] = json!("alpine");
    let (code, updated) = api.put(&path_of("web"), &replaced).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(updated["status"]["phase"], "Running");
    assert_eq!(updated["spec"]["image"]["alias"], "alpine");
    // And the status subresource keeps the spec.
    let mut status_put = updated.clone();
    status_put["status"]["phase"] = json!("Stopped");
    status_put["spec"]["image"]["alias"] = json!("debian");
    let (code, stopped) = api.put(&status_path, &status_put).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(stopped["status"]["phase"], "Stopped");
    assert_eq!(stopped["spec"]["image"]["alias"], "alpine");
}

/// The `Status` of a failure.
fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

#[tokio::test]
async fn broken_selectors_patches_and_crd_patterns_are_answered_with_their_status() {
    let api = Api::new();
    api.create(&container("web")).await;
    let labels = api
        .get(&format!(
            "{CONTAINERS}?labelSelector=app%3Dweb,app%20~%20web"
        ))
        .await;
    let message = r#"unable to parse requirement: "app ~ web""#;
    let expected = (StatusCode::BAD_REQUEST, failure(400, "BadRequest", message));
    assert_eq!(labels, expected);
    let fields = api
        .get(&format!("{CONTAINERS}?fieldSelector=metadata.name"))
        .await;
    let message = r#"invalid field selector: "metadata.name""#;
    let expected = (StatusCode::BAD_REQUEST, failure(400, "BadRequest", message));
    assert_eq!(fields, expected);
    let invalid = |message: &str| {
        let status = failure(422, "Invalid", message);
        (StatusCode::UNPROCESSABLE_ENTITY, status)
    };
    let not_a_list = json!({"op": "remove", "path": "/spec"});
    assert_eq!(
        api.patch(&path_of("web"), JSON_PATCH, &not_a_list).await,
        invalid("a JSON patch must be a list of operations")
    );
    let unknown = json!([{"op": "frobnicate", "path": "/spec"}]);
    assert_eq!(
        api.patch(&path_of("web"), JSON_PATCH, &unknown).await,
        invalid(
            "invalid JSON patch: unknown variant `frobnicate`, expected one of `add`, `remove`, `replace`, `move`, `copy`, `test`"
        )
    );
    let missing = json!([{"op": "replace", "path": "/spec/nothing/here", "value": 1}]);
    assert_eq!(
        api.patch(&path_of("web"), JSON_PATCH, &missing).await,
        invalid("operation '/0' failed at path '/spec/nothing/here': path is invalid")
    );
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema":
                {"type": "object", "properties": {"name": {"type": "string", "pattern": "["}}}}}]}});
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let created = api
        .send(Method::POST, crds, "application/json", Some(&crd))
        .await;
    let message = "schema pattern \"[\" is not a valid regular expression: regex parse error:\n    [\n    ^\nerror: unclosed character class";
    let expected = (StatusCode::BAD_REQUEST, failure(400, "BadRequest", message));
    assert_eq!(created, expected);
}

#[tokio::test]
async fn metadata_of_the_wrong_shape_and_bad_parameters_are_a_400_naming_them_and_change_nothing() {
    let api = Api::new();
    let (_, created) = api.create(&container("web")).await;
    let not_an_object = (
        StatusCode::BAD_REQUEST,
        failure(
            400,
            "BadRequest",
            "metadata: Invalid value: 1: must be an object",
        ),
    );
    let broken = json!({"metadata": 1});
    assert_eq!(api.put(&path_of("web"), &broken).await, not_an_object);
    assert_eq!(
        api.patch(&path_of("web"), MERGE, &broken).await,
        not_an_object
    );
    let replace = json!([{"op": "replace", "path": "/metadata", "value": 1}]);
    assert_eq!(
        api.patch(&path_of("web"), JSON_PATCH, &replace).await,
        not_an_object
    );
    let applied = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
        "metadata": 1});
    let apply_path = format!("{}?fieldManager=test", path_of("web"));
    assert_eq!(api.patch(&apply_path, APPLY, &applied).await, not_an_object);
    let mut new_one = container("db");
    new_one["metadata"] = json!(1);
    assert_eq!(api.create(&new_one).await, not_an_object);
    let labels = json!({"metadata": {"labels": {"tier": 1}}});
    assert_eq!(
        api.patch(&path_of("web"), MERGE, &labels).await,
        (
            StatusCode::BAD_REQUEST,
            failure(
                400,
                "BadRequest",
                r#"metadata.labels: Invalid value: {"tier":1}: must be an object of string values"#
            )
        )
    );
    assert_eq!(api.get(&path_of("web")).await, (StatusCode::OK, created));

    assert_eq!(
        api.get(&format!("{CONTAINERS}?limit=ten")).await,
        (
            StatusCode::BAD_REQUEST,
            failure(
                400,
                "BadRequest",
                r#"limit: Invalid value: "ten": must be a non-negative integer"#
            )
        )
    );
    // Near u64::MAX seconds used to overflow the watch's deadline, and the watch died at
    // once; now it runs (at most a day).
    let watch = format!("{CONTAINERS}?watch=1&timeoutSeconds={}", u64::MAX);
    assert!(
        api.watch_stays_open(&watch).await,
        "the watch ended at once"
    );
}

/// JSON values of any shape, with the keys the server reads most often, so that the cases go
/// deep into metadata, spec and patch paths rather than stopping at an unknown field.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let keys = prop::sample::select(vec![
        "metadata",
        "name",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "resourceVersion",
        "generation",
        "managedFields",
        "ownerReferences",
        "spec",
        "status",
        "apiVersion",
        "kind",
        "image",
        "alias",
        "state",
        "resources",
        "memory",
        "cpu",
        "clusterRef",
        "op",
        "path",
        "value",
        "from",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9/~._ -]{0,12}".prop_map(Value::from),
        Just(Value::from("/metadata")),
        Just(Value::from("lxd-operator.dev/v1alpha1")),
        Just(Value::from("LxdContainer")),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|map| {
                Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

#[test]
fn arbitrary_bodies_patches_and_parameters_never_panic_and_always_get_a_status() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = runtime.block_on(async {
        let api = Api::new();
        api.create(&container("web")).await;
        api
    });
    let writes = prop::sample::select(vec![
        (Method::POST, CONTAINERS.to_owned(), "application/json"),
        (Method::PUT, path_of("web"), "application/json"),
        (
            Method::PUT,
            format!("{}/status", path_of("web")),
            "application/json",
        ),
        (Method::PATCH, path_of("web"), MERGE),
        (Method::PATCH, path_of("web"), JSON_PATCH),
        (
            Method::PATCH,
            format!("{}?fieldManager=fuzz", path_of("web")),
            APPLY,
        ),
        (Method::PATCH, format!("{}/status", path_of("web")), MERGE),
    ]);
    let parameters = "[a-zA-Z0-9=!,()~._ -]{0,16}";
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(writes, any_json(), parameters, parameters),
            |((method, path, content_type), body, labels, fields)| {
                let (status, answer) =
                    runtime.block_on(api.send(method.clone(), &path, content_type, Some(&body)));
                prop_assert!(
                    status.as_u16() < 500,
                    "{method} {path} {body}: {status} {answer}"
                );
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("labelSelector", &labels)
                    .append_pair("fieldSelector", &fields)
                    .append_pair("limit", &labels)
                    .finish();
                let (status, answer) = runtime.block_on(api.get(&format!("{CONTAINERS}?{query}")));
                prop_assert!(status.as_u16() < 500, "{query}: {status} {answer}");
                Ok(())
            },
        )
        .unwrap();
}

#[tokio::test]
async fn what_schemathesis_found_is_fixed_405_says_allow_namespaces_stay_and_a_put_names_its_object()
 {
    let api = Api::new();
    let (_, created) = api.create(&container("web")).await;

    // RFC 9110: a 405 lists the methods the path takes.
    let request = Request::builder()
        .method("TRACE")
        .uri(CONTAINERS)
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET, POST, DELETE");

    // A DELETE of the namespace collection deleted every namespace with all it held; as in
    // Kubernetes, namespaces are deleted one by one.
    let (status, refused) = api.delete("/api/v1/namespaces").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{refused}");
    assert_eq!(
        api.get("/api/v1/namespaces/default").await.0,
        StatusCode::OK
    );
    assert_eq!(api.get(&path_of("web")).await.0, StatusCode::OK);

    // A replacement with no name, or another one, was written over the object at the URL.
    for metadata in [json!(null), json!({"name": "db"})] {
        let mut body = container("web");
        body["metadata"] = metadata;
        let (status, answer) = api.put(&path_of("web"), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .ends_with("does not match the name on the URL (web)"),
            "{answer}"
        );
    }
    assert_eq!(api.get(&path_of("web")).await, (StatusCode::OK, created));
}

const SETS: &str = "/apis/lxd-operator.dev/v1alpha1/namespaces/default/lxdcontainersets";

fn set(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}}}}})
}

/// The events a watch from `resource_version` replays, as (type, spec.replicas).
async fn replayed(api: &Api, resource_version: &str) -> Vec<(String, Value)> {
    let path = format!("{SETS}?watch=true&resourceVersion={resource_version}&timeoutSeconds=1");
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["type"] != "BOOKMARK")
        .map(|event| {
            (
                event["type"].as_str().unwrap().to_owned(),
                event["object"]["spec"]["replicas"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn scale_reads_and_writes_only_the_replicas_by_put_and_every_patch() {
    let api = Api::new();
    let (code, created) = api
        .send(Method::POST, SETS, "application/json", Some(&set("web", 2)))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let web = format!("{SETS}/web");
    let scale_path = format!("{web}/scale");
    let (code, scale) = api.get(&scale_path).await;
    assert_eq!(code, StatusCode::OK);
    let metadata = &created["metadata"];
    assert_eq!(
        scale,
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "default", "uid": metadata["uid"],
                "resourceVersion": metadata["resourceVersion"], "creationTimestamp": metadata["creationTimestamp"]},
            "spec": {"replicas": 2}, "status": {"replicas": 0}})
    );

    let (code, scale) = api
        .patch(&scale_path, MERGE, &json!({"spec": {"replicas": 5}}))
        .await;
    assert_eq!(
        (code, &scale["spec"]["replicas"]),
        (StatusCode::OK, &json!(5))
    );
    let (_, scaled) = api.get(&web).await;
    assert_eq!(scaled["spec"]["replicas"], 5);
    assert_eq!(scaled["metadata"]["generation"], 2);
    assert_eq!(
        scale["metadata"]["resourceVersion"],
        scaled["metadata"]["resourceVersion"]
    );
    let mut unchanged = scaled["spec"].clone();
    unchanged["replicas"] = json!(2);
    assert_eq!(unchanged, created["spec"], "only the replicas change");

    let replace = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]);
    let (code, scale) = api.patch(&scale_path, JSON_PATCH, &replace).await;
    assert_eq!(
        (code, &scale["spec"]["replicas"]),
        (StatusCode::OK, &json!(3))
    );
    let strategic = "application/strategic-merge-patch+json";
    let (code, scale) = api
        .patch(&scale_path, strategic, &json!({"spec": {"replicas": 4}}))
        .await;
    assert_eq!(
        (code, &scale["spec"]["replicas"]),
        (StatusCode::OK, &json!(4))
    );

    let mut put = scale.clone();
    put["spec"]["replicas"] = json!(6);
    let (code, scale) = api.put(&scale_path, &put).await;
    assert_eq!(
        (code, &scale["spec"]["replicas"]),
        (StatusCode::OK, &json!(6))
    );
    assert_eq!(api.get(&web).await.1["metadata"]["generation"], 5);
    // The same replicas again change nothing, not even the resourceVersion.
    let (code, again) = api
        .patch(&scale_path, MERGE, &json!({"spec": {"replicas": 6}}))
        .await;
    assert_eq!((code, &again), (StatusCode::OK, &scale));

    // The status the controller writes is what the Scale's status says.
    let status = json!({"status": {"replicas": 2, "selector": "app=web"}});
    assert_eq!(
        api.patch(&format!("{web}/status"), MERGE, &status).await.0,
        StatusCode::OK
    );
    let (_, scale) = api.get(&scale_path).await;
    assert_eq!(
        scale["status"],
        json!({"replicas": 2, "selector": "app=web"})
    );

    // Watchers see each change as a MODIFIED of the object.
    let events = replayed(&api, metadata["resourceVersion"].as_str().unwrap()).await;
    let modified: Vec<(&str, &Value)> = events.iter().map(|(t, r)| (t.as_str(), r)).collect();
    assert_eq!(
        modified,
        [
            ("MODIFIED", &json!(5)),
            ("MODIFIED", &json!(3)),
            ("MODIFIED", &json!(4)),
            ("MODIFIED", &json!(6)),
            ("MODIFIED", &json!(6))
        ]
    );
}

#[tokio::test]
async fn a_scale_write_respects_its_precondition_and_the_schema_and_stores_nothing_when_refused() {
    let api = Api::new();
    api.send(Method::POST, SETS, "application/json", Some(&set("web", 2)))
        .await;
    let web = format!("{SETS}/web");
    let scale_path = format!("{web}/scale");
    let (_, scale) = api.get(&scale_path).await;
    let (_, before) = api.get(&web).await;

    let mut stale = scale.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["replicas"] = json!(7);
    let conflict = "Operation cannot be fulfilled on lxdcontainersets.lxd-operator.dev \"web\": the object has been modified; please apply your changes to the latest version and try again";
    let (code, answer) = api.put(&scale_path, &stale).await;
    assert_eq!(
        (code, answer["message"].as_str()),
        (StatusCode::CONFLICT, Some(conflict))
    );
    let stale_patch = json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 7}});
    assert_eq!(
        api.patch(&scale_path, MERGE, &stale_patch).await.0,
        StatusCode::CONFLICT
    );

    let mut negative = scale.clone();
    negative["spec"]["replicas"] = json!(-1);
    let (code, answer) = api.put(&scale_path, &negative).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer["message"],
        "LxdContainerSet.lxd-operator.dev \"web\" is invalid: spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"
    );
    assert_eq!(answer["details"]["causes"][0]["field"], "spec.replicas");
    let negative_patch = json!({"spec": {"replicas": -1}});
    assert_eq!(
        api.patch(&scale_path, MERGE, &negative_patch).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // A Scale naming another object, replicas that are no int32, a patch taking them away.
    let mut other = scale.clone();
    other["metadata"]["name"] = json!("db");
    assert_eq!(
        api.put(&scale_path, &other).await.0,
        StatusCode::BAD_REQUEST
    );
    let text = json!({"spec": {"replicas": "five"}});
    assert_eq!(
        api.patch(&scale_path, MERGE, &text).await.0,
        StatusCode::BAD_REQUEST
    );
    let removed = json!([{"op": "remove", "path": "/spec/replicas"}]);
    assert_eq!(
        api.patch(&scale_path, JSON_PATCH, &removed).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.patch(&scale_path, APPLY, &json!({"spec": {"replicas": 3}}))
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(api.get(&web).await, (StatusCode::OK, before));

    // Only a kind whose CRD declares it has a scale; a subresource is never deleted.
    assert_eq!(
        api.get(&format!("{SETS}/db/scale")).await.0,
        StatusCode::NOT_FOUND
    );
    api.create(&container("c1")).await;
    assert_eq!(
        api.get(&format!("{}/scale", path_of("c1"))).await.0,
        StatusCode::NOT_FOUND
    );
    for path in [scale_path.clone(), format!("{web}/status")] {
        assert_eq!(
            api.delete(&path).await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{path}"
        );
    }
    assert_eq!(api.get(&web).await.0, StatusCode::OK);
}

#[tokio::test]
async fn discovery_lists_the_scale_subresource_as_an_autoscaling_v1_scale() {
    let api = Api::new();
    let (_, list) = api.get("/apis/lxd-operator.dev/v1alpha1").await;
    let scale = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "lxdcontainersets/scale")
        .unwrap();
    assert_eq!(
        (
            &scale["group"],
            &scale["version"],
            &scale["kind"],
            &scale["verbs"]
        ),
        (
            &json!("autoscaling"),
            &json!("v1"),
            &json!("Scale"),
            &json!(["get", "patch", "update"])
        )
    );
    let request = Request::builder()
        .uri("/apis")
        .header(
            header::ACCEPT,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let aggregated: Value = serde_json::from_slice(&bytes).unwrap();
    let sets = aggregated["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["versions"][0]["resources"].as_array().unwrap())
        .find(|r| r["resource"] == "lxdcontainersets")
        .unwrap();
    assert!(
        sets["subresources"]
            .as_array()
            .unwrap()
            .contains(&json!({"subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": ["get", "patch", "update"]})),
        "{sets}"
    );
    let (_, openapi) = api.get("/openapi/v3/apis/lxd-operator.dev/v1alpha1").await;
    let path = &openapi["paths"]["/apis/lxd-operator.dev/v1alpha1/namespaces/{namespace}/lxdcontainersets/{name}/scale"];
    assert_eq!(
        path["patch"]["x-kubernetes-group-version-kind"]["kind"],
        "Scale"
    );
    assert!(openapi["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
}

#[tokio::test]
async fn a_set_whose_selector_does_not_match_its_template_is_refused_and_not_stored() {
    let api = Api::new();
    let mut bad = set("web", 2);
    bad["spec"]["selector"] = json!({"matchLabels": {"app": "db"}});
    let (code, answer) = api
        .send(Method::POST, SETS, "application/json", Some(&bad))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer["message"],
        "LxdContainerSet.lxd-operator.dev \"web\" is invalid: spec.selector: Invalid value: \"object\": selector does not match the template's labels"
    );
    assert_eq!(
        answer["details"]["causes"],
        json!([{"reason": "FieldValueInvalid", "field": "spec.selector",
            "message": "Invalid value: \"object\": selector does not match the template's labels"}])
    );
    assert_eq!(
        api.get(&format!("{SETS}/web")).await.0,
        StatusCode::NOT_FOUND
    );
}
