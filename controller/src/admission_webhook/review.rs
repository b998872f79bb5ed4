//! The admission.k8s.io/v1 AdmissionReview: the request read out of it, and the answer. Pure.

use serde_json::{Value, json};

/// The API version of the reviews read and answered.
const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

/// What admission reads of an AdmissionReview's request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the answer, which the API server matches to its request by it.
    pub uid: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// The object's API group (`request.kind.group`).
    pub group: String,
    /// The object's kind, e.g. `LxdContainer`.
    pub kind: String,
    /// The resource written, e.g. `lxdcontainers`.
    pub plural: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name; empty while the API server has not named it yet (`generateName`).
    pub name: String,
    /// How messages name the object: its name, else its `generateName`.
    pub display_name: String,
    /// A dry run: nothing will be stored.
    pub dry_run: bool,
    /// The object as the write would store it.
    pub object: Value,
    /// The object before an update.
    pub old_object: Option<Value>,
}

/// Why a body is not a review this webhook can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an AdmissionReview of the version served.
    #[error(
        "the body is not an {REVIEW_API_VERSION} AdmissionReview (apiVersion {api_version:?}, kind {kind:?}); the webhook configuration must ask for admissionReviewVersions [v1]"
    )]
    NotAReview { api_version: String, kind: String },
    /// A field the answer needs is missing or of the wrong type.
    #[error("the AdmissionReview has no {field} (a string is required)")]
    Missing { field: &'static str },
}

/// Reads the request of the AdmissionReview in `body`.
pub fn read(body: &[u8]) -> Result<Request, ReviewError> {
    let review: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let (api_version, kind) = (text(&review["apiVersion"]), text(&review["kind"]));
    if api_version != REVIEW_API_VERSION || kind != "AdmissionReview" {
        return Err(ReviewError::NotAReview { api_version, kind });
    }
    let request = &review["request"];
    let required = |pointer: &str, field: &'static str| {
        request
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(ReviewError::Missing { field })
    };
    let object = request
        .get("object")
        .filter(|object| object.is_object())
        .cloned();
    let metadata = |field: &str| {
        object
            .as_ref()
            .and_then(|o| o["metadata"][field].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let name = match request["name"].as_str().filter(|name| !name.is_empty()) {
        Some(name) => name.to_owned(),
        None => metadata("name"),
    };
    let display_name = if name.is_empty() {
        metadata("generateName")
    } else {
        name.clone()
    };
    Ok(Request {
        uid: required("/uid", "request.uid")?,
        operation: required("/operation", "request.operation")?,
        group: text(&request["kind"]["group"]),
        kind: required("/kind/kind", "request.kind.kind")?,
        plural: text(&request["resource"]["resource"]),
        namespace: text(&request["namespace"]),
        name,
        display_name,
        dry_run: request["dryRun"].as_bool().unwrap_or(false),
        object: object.unwrap_or(Value::Null),
        old_object: request
            .get("oldObject")
            .filter(|object| object.is_object())
            .cloned(),
    })
}

/// The AdmissionReview allowing the request `uid`.
pub fn allowed(uid: &str) -> Value {
    json!({
        "apiVersion": REVIEW_API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    })
}

/// The AdmissionReview denying the request `uid` with `status` (a `Status` object: its code,
/// reason, message and details reach the client as the API server's own answer).
pub fn denied(uid: &str, status: Value) -> Value {
    json!({
        "apiVersion": REVIEW_API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": false, "status": status},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(request: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_create_is_read_with_its_object_and_an_update_with_the_old_one() {
        let create = read(&review(json!({
            "uid": "u1", "operation": "CREATE",
            "kind": {"group": "lxd-operator.dev", "version": "v1alpha1", "kind": "LxdContainer"},
            "resource": {"group": "lxd-operator.dev", "version": "v1alpha1", "resource": "lxdcontainers"},
            "namespace": "team-a", "name": "web",
            "object": {"metadata": {"name": "web"}, "spec": {}},
        })))
        .unwrap();
        assert_eq!(create.uid, "u1");
        assert_eq!(create.kind, "LxdContainer");
        assert_eq!(create.plural, "lxdcontainers");
        assert_eq!(create.name, "web");
        assert_eq!(create.old_object, None);
        let update = read(&review(json!({
            "uid": "u2", "operation": "UPDATE", "kind": {"group": "lxd-operator.dev", "kind": "LxdContainer"},
            "namespace": "team-a", "dryRun": true,
            "object": {"metadata": {"name": "web"}},
            "oldObject": {"metadata": {"name": "web"}},
        })))
        .unwrap();
        assert_eq!(update.name, "web");
        assert!(update.dry_run && !create.dry_run);
        let generated = read(&review(json!({
            "uid": "u3", "operation": "CREATE", "kind": {"group": "lxd-operator.dev", "kind": "LxdContainer"},
            "namespace": "team-a", "name": "",
            "object": {"metadata": {"generateName": "web-"}},
        })))
        .unwrap();
        assert_eq!(
            (generated.name.as_str(), generated.display_name.as_str()),
            ("", "web-")
        );
        assert!(update.old_object.is_some());
    }

    #[test]
    fn a_body_that_is_no_review_is_refused_saying_why() {
        let cases: [(&[u8], &str); 4] = [
            (b"not json", "the body is not JSON"),
            (
                br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}"#,
                "admissionReviewVersions [v1]",
            ),
            (
                br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
                "no request.uid",
            ),
            (
                br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "operation": "CREATE", "kind": 3}}"#,
                "no request.kind.kind",
            ),
        ];
        for (body, why) in cases {
            let error = read(body).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }

    #[test]
    fn an_answer_echoes_the_uid_and_a_denial_carries_the_status() {
        assert_eq!(
            allowed("u1")["response"],
            json!({"uid": "u1", "allowed": true})
        );
        let denial = denied("u2", json!({"code": 422, "message": "no"}));
        assert_eq!(denial["response"]["allowed"], false);
        assert_eq!(denial["response"]["status"]["code"], 422);
        assert_eq!(denial["apiVersion"], "admission.k8s.io/v1");
    }
}
