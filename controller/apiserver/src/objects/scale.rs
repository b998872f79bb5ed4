//! The scale subresource of a kind whose CRD declares `subresources.scale`, as the Kubernetes
//! API server serves it for custom resources: an `autoscaling/v1` `Scale` read from the paths
//! the CRD names, and writes (PUT, merge and JSON patches of the Scale) that change only the
//! replicas at `specReplicasPath` of the object, then go through the object's own write: its
//! schema validates them, its generation moves, its watchers see a MODIFIED.

use serde_json::{Value, json};

use super::write::{Target, meta_str};
use super::{ApiState, PatchKind, WriteOptions};
use crate::patch;
use crate::registry::{Resource, ScalePaths};
use crate::status::ApiError;

/// The fields of a path as a CRD writes it (`.spec.replicas`): the API server allows only
/// dot-separated field names there.
fn fields(path: &str) -> impl Iterator<Item = &str> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|field| !field.is_empty())
}

fn at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    fields(path).try_fold(object, |value, field| value.get(field))
}

/// Sets the value at `path`, making the objects on the way as needed.
fn set_at(object: &mut Value, path: &str, new: Value) {
    let mut value = object;
    for field in fields(path) {
        if !value.is_object() {
            *value = json!({});
        }
        value = &mut value[field];
    }
    *value = new;
}

/// The `Scale` of `object`. Replicas that are not integers read as 0 and a selector that is not
/// a string as none, where the Kubernetes API server would answer 500: a kind without a schema
/// may hold anything there, and reading it must not fail.
pub fn scale_of(paths: &ScalePaths, object: &Value) -> Value {
    let replicas = |path: &str| at(object, path).and_then(Value::as_i64).unwrap_or(0);
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = object["metadata"].get(field) {
            metadata[field] = value.clone();
        }
    }
    let mut status = json!({"replicas": replicas(&paths.status_replicas)});
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|path| at(object, path))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": metadata,
        "spec": {"replicas": replicas(&paths.spec_replicas)}, "status": status,
    })
}

/// The replicas a Scale sent by a client (or made by its patch) asks for. The Kubernetes API
/// server decodes it into `autoscaling/v1` `Scale`, refusing a body of another shape with a
/// 400; here it stays JSON, so the shape is checked: string `apiVersion` and `kind`, ObjectMeta
/// `metadata`, int32 replicas (absent is 0, as Go decodes it) and a string selector.
fn replicas_asked(scale: &Value) -> Result<i64, ApiError> {
    let refused = |what: &str| {
        ApiError::bad_request(format!("the body is not an autoscaling/v1 Scale: {what}"))
    };
    let Some(map) = scale.as_object() else {
        return Err(refused("not a JSON object"));
    };
    for field in ["apiVersion", "kind"] {
        if map
            .get(field)
            .is_some_and(|v| !(v.is_string() || v.is_null()))
        {
            return Err(refused(&format!("{field} must be a string")));
        }
    }
    crate::schema::object_meta::check(scale)?;
    let int32 = |part: &str| -> Result<i64, ApiError> {
        match scale[part].get("replicas") {
            None | Some(Value::Null) => Ok(0),
            Some(value) => value
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    refused(&format!(
                        "{part}.replicas must be a 32-bit integer, not {value}"
                    ))
                }),
        }
    };
    for part in ["spec", "status"] {
        if !(scale[part].is_object() || scale[part].is_null()) {
            return Err(refused(&format!("{part} must be an object")));
        }
    }
    int32("status")?;
    if scale["status"]
        .get("selector")
        .is_some_and(|v| !(v.is_string() || v.is_null()))
    {
        return Err(refused("status.selector must be a string"));
    }
    int32("spec")
}

/// How a scale write arrives.
#[derive(Debug, Clone, Copy)]
pub enum ScaleWrite<'a> {
    /// PUT of a whole Scale.
    Replace(&'a Value),
    /// PATCH of the Scale.
    Patch(PatchKind, &'a Value),
}

impl ApiState {
    /// `GET …/scale`.
    pub fn get_scale(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let paths = scale_paths(resource)?;
        Ok(scale_of(paths, &self.get(resource, namespace, name)?))
    }

    /// `PUT` or `PATCH …/scale`: the Scale the write makes of the object's current one gives
    /// the new replicas, written at `specReplicasPath` and nowhere else. The Scale's
    /// resourceVersion, when given, is a precondition (409 when stale); without one a write
    /// that lost a race is done again on the new state. Answers the object's new Scale.
    pub fn write_scale(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        write: ScaleWrite<'_>,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let paths = scale_paths(resource)?;
        if let ScaleWrite::Replace(body) = write {
            // As for any PUT: a replacement names the object it replaces.
            let named = meta_str(body, "name").unwrap_or_default();
            if named != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({named}) does not match the name on the URL ({name})"
                )));
            }
        }
        let explicit = match write {
            ScaleWrite::Replace(body) => meta_str(body, "resourceVersion").is_some(),
            ScaleWrite::Patch(_, Value::Array(operations)) => operations
                .iter()
                .any(|op| op["path"] == "/metadata/resourceVersion"),
            ScaleWrite::Patch(_, body) => meta_str(body, "resourceVersion").is_some(),
        };
        let key = resource.key(namespace, name);
        let written = self.retry_races(resource, &key, name, explicit, || {
            let current = self
                .store
                .get(&key)?
                .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
            let old = scale_of(paths, &current);
            let new = match write {
                ScaleWrite::Replace(body) => body.clone(),
                ScaleWrite::Patch(kind, body) => {
                    let mut scale = old.clone();
                    if at(&current, &paths.spec_replicas).is_none() {
                        // Kubernetes' marker of replicas the object does not have: a patch
                        // that sets none is refused below.
                        scale["spec"] = json!({});
                    }
                    match kind {
                        PatchKind::Json => patch::json_patch(&mut scale, body)?,
                        // A Scale has no lists, so a strategic merge patch of it is a merge
                        // patch; a server-side apply of it is refused before it gets here.
                        PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply => {
                            if !body.is_object() {
                                return Err(ApiError::bad_request(
                                    "a merge patch must be a JSON object",
                                ));
                            }
                            patch::merge_patch(&mut scale, body);
                        }
                    }
                    if scale["spec"].get("replicas").is_none_or(Value::is_null) {
                        return Err(ApiError::bad_request(format!(
                            "the spec replicas field \"{}\" cannot be empty",
                            paths.spec_replicas
                        )));
                    }
                    scale
                }
            };
            let replicas = replicas_asked(&new)?;
            if let Some(expected) = meta_str(&new, "resourceVersion")
                && Some(expected) != meta_str(&current, "resourceVersion")
            {
                return Err(ApiError::conflict(&resource.group, &resource.plural, name));
            }
            let mut next = current.clone();
            set_at(&mut next, &paths.spec_replicas, json!(replicas));
            let target = Target::new(resource, &key, name, false, options);
            self.write(target, current, next, false)
        })?;
        Ok(scale_of(paths, &written.object))
    }
}

/// The scale paths of `resource`, or a 404 as for any path it does not serve.
fn scale_paths(resource: &Resource) -> Result<&ScalePaths, ApiError> {
    resource
        .scale
        .as_ref()
        .ok_or_else(|| ApiError::no_route(&format!("{}/{{name}}/scale", resource.plural)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> ScalePaths {
        ScalePaths {
            spec_replicas: ".spec.replicas".to_owned(),
            status_replicas: ".status.replicas".to_owned(),
            label_selector: Some(".status.selector".to_owned()),
        }
    }

    #[test]
    fn a_scale_reads_the_paths_of_the_crd_and_absent_status_replicas_are_zero() {
        let object = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u",
            "resourceVersion": "7", "creationTimestamp": "2026-12-04T00:00:00Z", "labels": {"a": "b"}},
            "spec": {"replicas": 3}});
        assert_eq!(
            scale_of(&paths(), &object),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web", "namespace": "default", "uid": "u",
                    "resourceVersion": "7", "creationTimestamp": "2026-12-04T00:00:00Z"},
                "spec": {"replicas": 3}, "status": {"replicas": 0}})
        );
        let scaled = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3},
            "status": {"replicas": 2, "selector": "app=web"}});
        assert_eq!(
            scale_of(&paths(), &scaled)["status"],
            json!({"replicas": 2, "selector": "app=web"})
        );
    }

    #[test]
    fn replicas_are_set_at_their_path_making_the_objects_on_the_way() {
        let mut object = json!({"metadata": {}});
        set_at(&mut object, ".spec.scaling.replicas", json!(4));
        assert_eq!(object["spec"], json!({"scaling": {"replicas": 4}}));
    }

    #[test]
    fn a_scale_asks_for_int32_replicas_and_has_the_shape_of_a_scale() {
        assert_eq!(
            replicas_asked(&json!({"spec": {"replicas": 5}})).map_err(|e| e.code),
            Ok(5)
        );
        assert_eq!(replicas_asked(&json!({})).map_err(|e| e.code), Ok(0));
        for bad in [
            json!({"spec": {"replicas": "5"}}),
            json!({"spec": {"replicas": 1.5}}),
            json!({"spec": {"replicas": 4_294_967_296_i64}}),
            json!({"spec": []}),
            json!([]),
            json!({"kind": 5, "spec": {"replicas": 1}}),
            json!({"metadata": {"labels": 5}, "spec": {"replicas": 1}}),
            json!({"spec": {"replicas": 1}, "status": {"replicas": "2"}}),
            json!({"spec": {"replicas": 1}, "status": {"selector": 2}}),
            json!({"spec": {"replicas": 1}, "status": 2}),
        ] {
            assert_eq!(replicas_asked(&bad).map_err(|e| e.code), Err(400), "{bad}");
        }
    }
}
