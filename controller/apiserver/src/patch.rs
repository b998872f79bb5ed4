//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902) as the Kubernetes API server applies
//! them.

use serde_json::Value;

/// Applies a JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies a JSON patch. As in the Go API server, a `test` of a path that does not exist
/// against `null` passes (kube-rs' finalizer helper relies on it).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations = patch
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    let kept: Vec<Value> = operations
        .iter()
        .filter(|op| {
            let is_null_test = op["op"] == "test" && op.get("value").is_none_or(Value::is_null);
            let path = op["path"].as_str().unwrap_or_default();
            !(is_null_test && target.pointer(path).is_none_or(Value::is_null))
        })
        .cloned()
        .collect();
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(kept))
        .map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &patch).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_test_of_a_missing_path_against_null_passes() {
        let mut object = json!({"metadata": {"name": "a"}});
        let patch = json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]);
        json_patch(&mut object, &patch).unwrap();
        assert_eq!(object["metadata"]["finalizers"], json!(["x"]));
        let failing = json!([{"op": "test", "path": "/metadata/name", "value": "b"}]);
        assert!(json_patch(&mut object, &failing).is_err());
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let mut object = json!({"spec": {"a": 1, "b": 2}});
        merge_patch(&mut object, &json!({"spec": {"a": null, "c": 3}}));
        assert_eq!(object, json!({"spec": {"b": 2, "c": 3}}));
    }
}
