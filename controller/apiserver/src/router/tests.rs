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
