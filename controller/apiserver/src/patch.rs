//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902) as the Kubernetes API server applies
//! them.

use serde_json::Value;

/// A JSON patch that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch is not a JSON list.
    #[error("a JSON patch must be a list of operations")]
    NotAList,
    /// An operation is not one of RFC 6902's.
    #[error("invalid JSON patch: {source}")]
    Invalid {
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// An operation fails on the object (a `test` that does not hold, a path not there).
    #[error(transparent)]
    Failed(#[from] json_patch::PatchError),
}

/// Applies a JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies a JSON patch, whole or not at all. As in the Go API server, a `test` of a path that
/// does not exist against `null` passes (kube-rs' finalizer helper relies on it).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let operations = patch.as_array().ok_or(PatchError::NotAList)?;
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
        .map_err(|source| PatchError::Invalid { source })?;
    // On a copy, without json_patch's own undo: that undo does not restore what a failed `move`
    // removed (the property test found `move /a -> /0/a` losing `/a`), and it panics when it
    // cannot undo a move to the root (`move /c -> ""`, then any failure). A failed patch must
    // change nothing, so the copy is simply dropped.
    let mut patched = target.clone();
    json_patch::patch_unsafe(&mut patched, &patch)?;
    *target = patched;
    Ok(())
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
    fn a_failed_patch_after_a_move_to_the_root_changes_nothing_and_does_not_panic() {
        let original = json!({"c": {"x": 1}});
        let mut object = original.clone();
        let patch = json!([
            {"op": "move", "from": "/c", "path": ""},
            {"op": "test", "path": "/missing", "value": 2}
        ]);
        assert!(json_patch(&mut object, &patch).is_err());
        assert_eq!(object, original);
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let mut object = json!({"spec": {"a": 1, "b": 2}});
        merge_patch(&mut object, &json!({"spec": {"a": null, "c": 3}}));
        assert_eq!(object, json!({"spec": {"b": 2, "c": 3}}));
    }

    #[test]
    fn each_broken_patch_says_why() {
        let mut object = json!({"metadata": {"name": "a"}});
        let not_a_list = json_patch(&mut object, &json!({"op": "add"})).unwrap_err();
        assert!(matches!(not_a_list, PatchError::NotAList));
        let unknown = json_patch(&mut object, &json!([{"op": "frobnicate", "path": "/a"}]));
        assert!(
            matches!(&unknown, Err(PatchError::Invalid { .. })),
            "{unknown:?}"
        );
        let missing = json!([{"op": "remove", "path": "/spec/x"}]);
        let failed = json_patch(&mut object, &missing).unwrap_err();
        assert!(matches!(failed, PatchError::Failed(_)));
        assert!(failed.to_string().contains("/spec/x"), "{failed}");
    }
}

/// Properties over generated objects and patches: no patch panics, a JSON patch that fails
/// changes nothing, and a merge patch does what RFC 7386 says.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-c/~0-9-]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn any_operation() -> impl Strategy<Value = Value> {
        let op = prop::sample::select(vec![
            "add", "remove", "replace", "move", "copy", "test", "x",
        ]);
        let path = "(/[a-c0-9-]){0,3}";
        (op, path, path, any_json()).prop_map(|(op, path, from, value)| {
            serde_json::json!({"op": op, "path": path, "from": from, "value": value})
        })
    }

    proptest! {
        #[test]
        fn a_json_patch_applies_whole_or_changes_nothing(
            target in any_json(),
            operations in prop::collection::vec(any_operation(), 0..5),
            junk in any_json(),
        ) {
            let mut patched = target.clone();
            if json_patch(&mut patched, &Value::Array(operations)).is_err() {
                prop_assert_eq!(&patched, &target);
            }
            let mut patched = target.clone();
            let _ = json_patch(&mut patched, &junk);
        }

        #[test]
        fn a_merge_patch_sets_what_it_names_removes_its_nulls_and_is_idempotent(
            target in any_json(),
            patch in prop::collection::btree_map("[a-c]", any_json(), 0..4),
        ) {
            let patch = Value::Object(patch.into_iter().collect());
            let mut once = target.clone();
            merge_patch(&mut once, &patch);
            let mut twice = once.clone();
            merge_patch(&mut twice, &patch);
            prop_assert_eq!(&twice, &once);
            for (key, value) in patch.as_object().into_iter().flatten() {
                match value {
                    Value::Null => prop_assert!(once.get(key).is_none()),
                    Value::Object(_) => prop_assert!(once[key].is_object()),
                    other => prop_assert_eq!(&once[key], other),
                }
            }
        }
    }
}
